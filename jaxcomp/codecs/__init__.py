"""Image codecs: differentiable JPEG (`jpeg`) and learned codecs."""
