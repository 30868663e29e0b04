"""The simulator's HTTP API (processing/providers.py documents it). OWNED BY the simulator helper."""

urlpatterns: list = []
