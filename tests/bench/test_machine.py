"""The benchmark's description of the machine it ran on."""

from __future__ import annotations

from bench import machine

VIRTUAL_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu vme hypervisor avx2
processor\t: 1
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
"""


def test_a_cpu_is_named_with_its_family_and_model_and_whether_it_is_virtual() -> None:
    assert machine.cpu_model(VIRTUAL_EPYC) == "AMD EPYC (family 26, model 2, virtual machine)"


def test_a_physical_cpu_is_not_called_virtual() -> None:
    physical = VIRTUAL_EPYC.replace(" hypervisor", "")
    assert machine.cpu_model(physical) == "AMD EPYC (family 26, model 2)"


def test_a_cpu_without_numbers_is_named_alone() -> None:
    assert machine.cpu_model("model name\t: Some CPU\n") == "Some CPU"
