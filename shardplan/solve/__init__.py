"""Search: score layouts (`estimate`) and choose among them."""
