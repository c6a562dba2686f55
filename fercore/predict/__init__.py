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
# How to read each method's map, and what it cannot tell: one line under every map on the Classify page.
METHOD_READING = {
    "saliency": "Bright: pixels where a small change moves the score most (SmoothGrad: averaged over noisy copies). "
                "It shows sensitivity, not where the model looks, nor whether a pixel argues for or against.",
    "ig": "Bright: pixels that added most to the score on the way from a black face to this one. It depends on "
          "that black starting point, and bright can mean evidence for or against the class.",
    "gradcam": "Bright: regions of the last feature map that support the class. Coarse (a 48-pixel face seen as "
               "6x6 cells by the starter), so it cannot point at a single eye corner or the lip line.",
    "occlusion": "Bright: where hiding a patch (a quarter of the face wide) lowers the score most. Coarse, and a "
                 "hidden patch is an odd face, not a neutral one.",
}
