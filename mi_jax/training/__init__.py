"""Training loops: a pure train step scanned in chunks, vmapped over model grids."""
