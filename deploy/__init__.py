"""Running the Compose stack: a `.env` with fresh secrets, the Docker engine and base images
when the machine has none, build, start, wait for health, stop. Developer and operator
tooling: pipeline code never imports it. `python -m deploy --help` lists the commands."""
