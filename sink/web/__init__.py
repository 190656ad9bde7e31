"""The HTTP surface: typed app keys, answers, health, admin-token auth, and the handlers of
``POST /events`` (the receiver) and the admin API. ``sink.app`` assembles them."""
