"""GLSL sources of the renderer, loaded at run time by fitter.render (package data of fitter.shaders)."""
