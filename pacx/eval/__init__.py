"""Stage 3 (METHOD.md "Stage 3"): linear probe (probe), fine-tuning (finetune), metrics, bootstrap intervals,
low-label subsets (lowlabel), segmentation, the alignment probe, attention rollout, the task splits (splits), the
results report (report) and the figures (plots)."""
