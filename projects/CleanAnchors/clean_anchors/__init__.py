"""CleanAnchors: "Learning from Noisy Anchors for One-stage Object Detection" (Li et al., CVPR 2020)
as a Detectron2 project. The method's modules land with its own issue; this package exists so that
`pip install -e .` exposes the project namespace from the start."""
