"""Audio features for lip sync: Wav2Lip log-mel, per-frame mel windows, voice activity.

Headless (numpy only). Everything runs on 16 kHz mono on an 80 Hz step grid shared by the mel
and the voice detector; per-frame values are placed by each video frame's timestamp.
"""
from engine.audio.features import AudioFeatures, dub_features, features_from_samples
from engine.audio.mel import MEL_BANDS, MEL_FPS, SAMPLE_RATE, SILENCE, log_mel, mel_filterbank
from engine.audio.vad import FrameActivity, VoiceActivity, detect_voice, per_frame
from engine.audio.windows import MEL_STEPS, mel_windows, window_starts

__all__ = [
    "AudioFeatures", "FrameActivity", "MEL_BANDS", "MEL_FPS", "MEL_STEPS", "SAMPLE_RATE", "SILENCE",
    "VoiceActivity", "detect_voice", "dub_features", "features_from_samples", "log_mel",
    "mel_filterbank", "mel_windows", "per_frame", "window_starts",
]
