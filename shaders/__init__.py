"""GLSL sources of the renderer, loaded at run time by fitter.geometry.render (package data of fitter.shaders)."""
