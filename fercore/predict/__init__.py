"""Using a trained run: images in, faces found, classes scored, attributions explained.

ATTRIBUTION_METHODS is the registry of explanation methods (name -> label) that explain.py implements; it
lives here, free of torch, so the CLI can list the choices without importing the network code.
"""
ATTRIBUTION_METHODS = {
    "saliency": "Saliency",
    "ig": "Integrated Gradients",
    "gradcam": "Grad-CAM",
    "occlusion": "Occlusion",
}
