"""pacx: a minimal pure-PyTorch reference implementation of PaCX-MAE (METHOD.md describes the method).

    models/   the method: ViT, MAE, LoRA, lab DAE, ECGFounder's Net1D, the Stage-2 heads and losses
    data/     the file formats users have: images, DICOM, CSV tables, Symile-MIMIC arrays, WFDB ECGs, lab tables
    eval/     Stage 3: probes, fine-tuning, segmentation, alignment, rollout, bootstrap intervals, the report
    world/    the built-in synthetic physiology world and the one-command demo
    *.py      shared machinery: torchrun/DDP and AMP (dist), data loading (loader), optimizers (optim),
              checkpoints (checkpoint, weights), the training loop's books (training), logs (runlog), CLI (config),
              one-line errors (errors)
Imports point one way: models <- machinery <- data <- eval <- world <- the scripts (tests/test_layout.py).
"""
