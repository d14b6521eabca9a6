"""`bard web`: an artifact as a static site that generates in the reader's browser.

The site runs `model.onnx` with onnxruntime-web; its JavaScript (`bard.js`) reads the
vocabulary and the graph contract from the artifact's `manifest.json`, never from a copy.
"""
