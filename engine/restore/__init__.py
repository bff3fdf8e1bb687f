"""Face restoration: an optional stage that sharpens the generated mouth with a face model."""
