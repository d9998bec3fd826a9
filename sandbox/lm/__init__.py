"""The LM clients: litellm behind one protocol (:mod:`.clients`), the event loop their calls run on
(:mod:`.aio`), litellm Routers (:mod:`.router`), and the embedded local model on a llama.cpp server
(:mod:`.local`, :mod:`.llama_server`), which the model string ``"local"`` names.

It meters calls against :mod:`sandbox.engine.budget` and imports nothing else of the engine.
"""
