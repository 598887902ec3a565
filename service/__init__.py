"""The pluralign HTTP service: a Litestar app factory over the library (see `service.app.create_app`)."""
