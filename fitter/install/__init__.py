"""Installing a face model into the store: download or archive, checksums, the format's importer
(`fitter.model.formats`), and the landmark embedding derived by detecting on renders of the painted model
(`embedding_build`), staged and renamed into place (`installer`).

Imports: `fitter.prepared` and everything below it.
"""
