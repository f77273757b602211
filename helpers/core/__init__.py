"""The core every notebook stands on: settings, places, files, and what each artifact was made from.

``config`` (every parameter, of two kinds: identity and free), ``lab`` (the notebooks' lab cells: read, executed, digested),
``env`` (Colab/Kaggle/local paths, Drive), ``storage`` (atomic writes, retries), ``artifacts`` (one reader
for every artifact), ``provenance`` (the digests that chain them), ``figures`` (report-ready PNGs),
``faults`` (named kill points for the tests), ``progress`` (bars that read well once exported),
``folderlock`` (one writer per folder). Imports nothing else of ``helpers``.
"""
