"""Input-transformation defenses: JPEG, pixel deflection, R-CAM, wavelet denoising."""
