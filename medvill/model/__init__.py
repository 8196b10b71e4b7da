"""MedViLL network: visual/text embeddings, attention masks, BERT encoder, pretraining heads."""
