from tests.service.tiny import minilm, tiny_generator_dir, tiny_pal_dir  # noqa: F401
