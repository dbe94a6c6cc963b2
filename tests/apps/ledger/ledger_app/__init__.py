"""A test app whose schema holds what real apps have and the example app does not (issue 17)."""
