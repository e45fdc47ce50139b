"""kseg.device.cpu_kind on the /proc/cpuinfo of each CPU kind these machines have been."""

import pytest

from kseg import device

pytestmark = pytest.mark.backend_independent  # text in, text out


def _cpuinfo(vendor: str, family: int, name: str, flags: str) -> str:
    return f"vendor_id\t: {vendor}\ncpu family\t: {family}\nmodel name\t: {name}\nflags\t\t: fpu sse2 {flags}\n"


@pytest.mark.parametrize(
    "cpuinfo, kind",
    [
        (_cpuinfo("AuthenticAMD", 25, "AMD EPYC", "avx2 avx512f avx512_bf16"), "AMD EPYC Zen 4, avx512_bf16"),
        (_cpuinfo("AuthenticAMD", 25, "AMD EPYC 7B13", "avx2 fma"), "AMD EPYC 7B13 Zen 3, avx2"),
        (_cpuinfo("AuthenticAMD", 26, "AMD EPYC", "avx2 avx512f avx512_bf16"), "AMD EPYC Zen 5, avx512_bf16"),
        (
            _cpuinfo(
                "GenuineIntel", 6, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "avx512_bf16 amx_bf16 amx_tile"
            ),
            "Intel Xeon Platinum 8481C CPU @ 2.70GHz, amx",
        ),
        ("", "cpu, baseline"),
    ],
)
def test_each_cpu_kind_is_named_with_its_widest_feature(cpuinfo, kind):
    assert device.cpu_kind(cpuinfo) == kind
