"""Users: profile, preferences (paginated), export, delete, and reward scoring."""
