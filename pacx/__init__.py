"""pacx: a minimal pure-PyTorch reference implementation of PaCX-MAE. See README.md and DESIGN notes in each module."""
