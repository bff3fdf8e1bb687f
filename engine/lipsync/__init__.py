"""Lip-sync core: mouth shapes, the audio-to-mouth motion model, and the generator backends."""
