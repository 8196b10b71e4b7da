"""Dual-encoder contrastive pretraining (ConVIRT, CLIP, LoVT): config, losses, model, data."""
