from segloss.cli import main


def test_losses_command_ranks_good_before_bad(capsys):
    assert main(["losses", "--vocab", "50", "--tokens", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: [float(x) for x in line.split()[1:4]] for line in lines[2:7]}
    assert set(rows) == {"ce", "focal", "gdice", "sadl", "lovasz"}
    for name, (good, uniform, bad) in rows.items():
        assert good < bad, name
        if name != "sadl":
            assert good < uniform < bad, name
    assert lines[-1].startswith("combined 0.6·CE")


def test_losses_command_rejects_bad_sizes(capsys):
    assert main(["losses", "--vocab", "1"]) == 2
    assert "--vocab and --tokens must be ≥ 2" in capsys.readouterr().err
