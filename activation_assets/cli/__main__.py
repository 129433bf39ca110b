from activation_assets.cli.main import run

run()
