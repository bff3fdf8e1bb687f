"""Face analysis: find, track and describe the target face of a clip range, once, cached.

Entry point: :func:`engine.face.analysis.analyze_range`. Stages, each a small interface with
backends chosen by name: detection (:mod:`.detect`: dlib HOG, SCRFD), 68-point landmarks
(:mod:`.landmark`: dlib shape predictor, InsightFace 2d106det), tracking (:mod:`.track`), target
choice (:mod:`.target`), smoothing (:mod:`.smooth`), head pose (:mod:`.pose`), drawing
(:mod:`.overlay`). Importing this package loads no backend library.
"""
