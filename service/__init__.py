"""An async OAuth broker: connects third-party accounts, keeps their credentials fresh, serves them."""
