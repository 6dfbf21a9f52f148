"""The steps that set up a Coral on the machine doctor runs on (docs/coral-setup.md in full).

Printed by ``coral-mfg doctor`` when no usable Edge TPU runtime is found, for
this platform and the kinds of Coral it shows.
"""

from __future__ import annotations

import platform
from pathlib import Path

from coral_mfg.inference import discovery
from coral_mfg.inference.discovery import SETUP_DOC, Coral, Roots

X86 = "x86-64 Debian/Ubuntu"
PI5 = "Raspberry Pi 5, 64-bit Raspberry Pi OS"


def platform_name(roots: Roots | None = None) -> str:
    roots = roots or Roots.from_env()
    machine = platform.machine()
    if discovery.is_pi5(roots):
        return PI5 if machine == "aarch64" else f"Raspberry Pi 5 ({machine}: use 64-bit OS)"
    if machine in ("x86_64", "AMD64"):
        return X86 if Path("/etc/debian_version").exists() else f"x86-64 {platform.system()}"
    return f"{machine} {platform.system()}"


def steps(found: list[Coral], litert: str, roots: Roots | None = None) -> list[str]:
    """Numbered steps for this platform; USB and PCIe parts as the Corals found call for
    (both when none is found)."""
    name = platform_name(roots)
    pi5 = name.startswith("Raspberry Pi 5")
    arch = "arm64" if pi5 or platform.machine() == "aarch64" else "amd64"
    kinds = {c.kind for c in found} or {"usb", "pci"}
    out = [
        f"install a libedgetpu built for the TensorFlow of {litert} (a community "
        f"libedgetpu1-std or -max package '16.0tfX.Y.Z' for {arch}, X.Y.Z the TensorFlow "
        "release closest to the runtime's): sudo apt install ./libedgetpu1-std_*.deb",
    ]
    if "usb" in kinds:
        out.append("USB Coral: the package's udev rules give plugdev the device; run 'sudo "
                   "usermod -aG plugdev $USER', log in again, and re-plug the Coral into a "
                   "USB 3 port" + (" (blue) with the 5 A power supply" if pi5 else ""))
    if "pci" in kinds:
        if pi5:
            out.append(f"PCIe/M.2 Coral: in /boot/firmware/config.txt set {discovery.PI5_OVERLAYS}"
                       " and kernel=kernel8.img (the driver needs 4K pages), then reboot")
        out.append("PCIe/M.2 Coral: build and install the gasket-dkms driver for this kernel "
                   "(its headers installed), add the udev rule SUBSYSTEM==\"apex\", MODE=\"0660\", "
                   "GROUP=\"apex\", run 'sudo groupadd -f apex; sudo usermod -aG apex $USER', "
                   "then reboot: /dev/apex_0 appears")
    out.append("run 'coral-mfg doctor' again: the Edge TPU probe must say 'both models built and "
               "answered' and 'known-answer check passed'")
    return [f"Set up a Coral on this machine ({name}; in full: {SETUP_DOC}):",
            *(f"  {i}. {line}" for i, line in enumerate(out, start=1))]
