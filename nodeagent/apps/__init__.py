"""Built-in apps behind the image catalog (nodeagent/images.py), run as
`python -m nodeagent.apps.<app>`: small stdlib/asyncio programs that behave like the tutorial
images they stand for. They bind $KUBELAB_BIND_IP (default 0.0.0.0)."""
