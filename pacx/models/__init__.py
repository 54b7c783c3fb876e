"""The method (METHOD.md "Stage 1a" to "Stage 2"), one concept per file, importing nothing outside this folder:
vit (the encoder), pos_embed, mae (Stage 1a), labs_dae (Stage 1b), ecg (Stage 1c, ECGFounder's Net1D), lora, heads
and losses (Stage 2), pacx_model (the Stage-2 model and its export)."""
