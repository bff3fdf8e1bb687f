"""Editor round trip: timelines in, shots re-synced, timelines out (no Qt)."""
