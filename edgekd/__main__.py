from edgekd.cli.main import run

run()
