"""The files users have, read with one-line errors: images and DICOM (images), augmentations (transforms), CSV
checks (tables), image data sets (datasets, cxr_datasets), Symile-MIMIC arrays (symile), the 50 labs and their
percentiles (labs), a user's lab table (lab_table), WFDB ECGs and ECGFounder's preprocessing (ecg_io), Stage-1 inputs
(stage1), the preprocessing cache (cache, make_cache), the frozen-encoder targets of Stage 2 (targets) and the paper's
Stage-3 benchmarks by name (tasks, read by task_layouts and seg_layouts)."""
