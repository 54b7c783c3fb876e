"""The built-in synthetic physiology world (patients whose chest X-rays, ECGs and labs share a latent physiology) and
the one-command demo that runs the whole method on it: `python -m pacx.world.demo`."""
