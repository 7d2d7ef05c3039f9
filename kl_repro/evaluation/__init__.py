"""Sample-quality metrics shared by both papers: Frechet distances, KID, energy distance, features."""
