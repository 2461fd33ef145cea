from breastcad.cli import app

app(prog_name="breastcad")
