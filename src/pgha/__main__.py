"""`pgha` and `python -m pgha`: the agent straight away, every other command through click.

``pgha agent -c FILE`` (or ``--config FILE``, ``--config=FILE``) is the one command a node runs
for weeks, so it skips the CLI: click and the operator commands would stay resident in the
agent for nothing.  Anything else, ``pgha agent --help`` included, goes through click.
"""

import sys


def main() -> None:
    from pgha.agent.entry import config_path_of

    config_path = config_path_of(sys.argv[1:])
    if config_path is not None:
        from pgha.agent.entry import run_agent

        run_agent(config_path)
        return
    from pgha.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
