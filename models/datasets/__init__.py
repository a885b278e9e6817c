"""Training sets made of real photographs, and readers for YOLO and image-folder layouts.

numpy, OpenCV and scikit-image only: importing this package never imports torch.
"""
