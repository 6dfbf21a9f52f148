"""Which Corals the operating system shows, and whether this user may open them.

Read from sysfs and ``/dev`` only: nothing here loads libedgetpu or opens a
device. That matters: libedgetpu resets a USB Coral's port when it opens it,
so a second process that merely tried would knock over a station using it;
and when the user may not open the device node, libedgetpu retries for 25 s
and then says nothing. Reading sysfs first gives every set-up fault its own
line and its fix before any process starts.

The roots are settable (``CORAL_MFG_SYSFS``, ``CORAL_MFG_DEV``) so tests can
build fake trees.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SYSFS_ENV = "CORAL_MFG_SYSFS"
DEV_ENV = "CORAL_MFG_DEV"

#: USB ids of the Coral USB Accelerator: before its firmware is loaded, and after.
USB_DFU = ("1a6e", "089a")
USB_APP = ("18d1", "9302")
#: PCI ids of the Coral M.2 / Mini PCIe accelerators (the Edge TPU "Apex").
PCI_IDS = ("0x1ac1", "0x089a")

SETUP_DOC = "docs/coral-setup.md"
UDEV_FIX = (f"install the Coral udev rules for 1a6e:089a and 18d1:9302 (GROUP=\"plugdev\", "
            f"see {SETUP_DOC}), add {{user}} to plugdev (sudo usermod -aG plugdev {{user}}), "
            "log in again, then unplug and re-plug the Coral")
APEX_FIX = (f"add the udev rule SUBSYSTEM==\"apex\", MODE=\"0660\", GROUP=\"apex\" (see "
            f"{SETUP_DOC}), add {{user}} to the apex group (sudo groupadd -f apex; sudo usermod "
            "-aG apex {user}), then reboot")
DRIVER_FIX = ("install the gasket and apex kernel modules (the gasket-dkms package, see "
              f"{SETUP_DOC}) and reboot")
PI5_PAGES_FIX = ("; on a Raspberry Pi 5 the driver needs the 4K-page kernel: kernel=kernel8.img "
                 "in /boot/firmware/config.txt, then reboot")
PI5_OVERLAYS = ("dtparam=pciex1, dtoverlay=pciex1-compat-pi5,no-mip and "
                "dtoverlay=pcie-32bit-dma-pi5")
PI5_NOTHING = (f"on a Raspberry Pi 5 a PCIe/M.2 Coral shows only with {PI5_OVERLAYS} in "
               "/boot/firmware/config.txt (and, for its driver, kernel=kernel8.img); then reboot; "
               "a USB Coral shows in lsusb as 1a6e:089a or 18d1:9302")


@dataclass(frozen=True)
class Roots:
    """Where sysfs and /dev are: the real ones, or a test's fake trees."""

    sys: Path = Path("/sys")
    dev: Path = Path("/dev")

    @classmethod
    def from_env(cls) -> Roots:
        return cls(Path(os.environ.get(SYSFS_ENV) or "/sys"),
                   Path(os.environ.get(DEV_ENV) or "/dev"))


@dataclass(frozen=True)
class Coral:
    """One Edge TPU the OS shows: what it is, its device node, and what stops it opening.

    ``problem`` is one line with the fix, or empty when this user can open it.
    """

    kind: str  # "usb" or "pci"
    sysname: str  # USB port path ("2-1", "1-1.4") or PCI address ("0000:01:00.0")
    ids: str  # "18d1:9302"
    node: Path | None
    problem: str = ""
    notes: tuple[str, ...] = ()
    holders: tuple[str, ...] = field(default=())  # other processes with the node open

    @property
    def key(self) -> str:
        """Names this device for the lock: stable across re-plugging into the same port."""
        return f"{self.kind}-{self.sysname}"

    @property
    def usable(self) -> bool:
        return not self.problem

    def describe(self) -> str:
        what = "USB" if self.kind == "usb" else "PCIe"
        node = f" at {self.node}" if self.node is not None else ""
        head = f"{what} {self.sysname} ({self.ids}){node}"
        return "; ".join([head, *self.notes, *([self.problem] if self.problem else [])])


def user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _mode_owner(path: Path) -> str:
    """'crw-rw-r-- root:plugdev', for a message saying why a node cannot be opened."""
    try:
        st = path.stat()
    except OSError:
        return "?"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{stat.filemode(st.st_mode)} {owner}:{group}"


def _access_problem(node: Path, fix: str) -> str:
    """Empty when this user may open ``node`` for reading and writing, as libedgetpu does."""
    if not node.exists():
        return (f"{node} does not exist: the device node is missing (inside a container, pass "
                "the device through, e.g. --device /dev/bus/usb or --device /dev/apex_0)")
    if os.access(node, os.R_OK | os.W_OK):
        return ""
    user = user_name()
    return (f"{node} is not readable and writable by {user} ({_mode_owner(node)}): "
            + fix.format(user=user))


def holders_of(node: Path, proc: Path = Path("/proc")) -> tuple[str, ...]:
    """Other processes holding ``node`` open, as 'name (pid N)'; only those this user may see."""
    try:
        target = os.path.realpath(node)
    except OSError:
        return ()
    found: list[str] = []
    me = os.getpid()
    try:
        entries = list(proc.iterdir())
    except OSError:
        return ()
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    name = _read(entry / "comm") or "?"
                    found.append(f"{name} (pid {entry.name})")
                    break
            except OSError:
                continue
    return tuple(found)


def _usb(roots: Roots, dev: Path) -> Coral | None:
    ids = (_read(dev / "idVendor"), _read(dev / "idProduct"))
    if ids not in (USB_DFU, USB_APP):
        return None
    notes: list[str] = []
    if ids == USB_DFU:
        notes.append("firmware not loaded yet (libedgetpu loads it on the first open, then the "
                     "Coral comes back as 18d1:9302)")
    speed = _read(dev / "speed")
    if speed is not None and speed.isdigit() and int(speed) < 5000:
        notes.append(f"on a USB 2 port ({speed} Mb/s): plug it into a USB 3 port for full speed")
    bus, num = _read(dev / "busnum"), _read(dev / "devnum")
    node: Path | None = None
    problem = ""
    if bus is not None and num is not None and bus.isdigit() and num.isdigit():
        node = roots.dev / "bus" / "usb" / f"{int(bus):03d}" / f"{int(num):03d}"
        problem = _access_problem(node, UDEV_FIX)
    else:
        problem = "sysfs gives no bus and device number: re-plug the Coral"
    holders = holders_of(node) if node is not None and node.exists() else ()
    return Coral("usb", dev.name, ":".join(ids), node, problem, tuple(notes), holders)


def _apex_nodes(roots: Roots, dev: Path) -> list[str]:
    """The apex_N names the driver gave this PCI device (its class devices)."""
    names = sorted(p.name for p in (dev / "apex").glob("apex_*")) if (dev / "apex").is_dir() \
        else []
    if names:
        return names
    for cls in sorted((roots.sys / "class" / "apex").glob("apex_*")):
        if (cls / "device").resolve() == dev.resolve():
            names.append(cls.name)
    return names


def _pci(roots: Roots, dev: Path, pi5: bool, page_size: int) -> Coral | None:
    ids = (_read(dev / "vendor"), _read(dev / "device"))
    if ids != PCI_IDS:
        return None
    label = f"{ids[0][2:]}:{ids[1][2:]}"
    driver = (dev / "driver").resolve().name if (dev / "driver").exists() else ""
    if not driver:
        fix = DRIVER_FIX + (PI5_PAGES_FIX if pi5 and page_size != 4096 else "")
        return Coral("pci", dev.name, label, None, f"no driver is bound to it: {fix}")
    notes = (f"driver {driver}",)
    names = _apex_nodes(roots, dev)
    if not names:
        return Coral("pci", dev.name, label, None,
                     f"driver {driver} is bound but made no apex device: see 'dmesg | grep -i "
                     f"apex', and {DRIVER_FIX}", notes)
    node = roots.dev / names[0]
    problem = _access_problem(node, APEX_FIX)
    holders = holders_of(node) if node.exists() else ()
    return Coral("pci", dev.name, label, node, problem, notes, holders)


def is_pi5(roots: Roots) -> bool:
    model = _read(roots.sys / "firmware" / "devicetree" / "base" / "model") or ""
    return "Raspberry Pi 5" in model


def survey(roots: Roots | None = None, page_size: int | None = None) -> list[Coral]:
    """Every Coral the OS shows, in libedgetpu's order: PCIe, then USB before its firmware
    is loaded, then USB after (each by name)."""
    roots = roots or Roots.from_env()
    size = page_size if page_size is not None else os.sysconf("SC_PAGE_SIZE")
    pi5 = is_pi5(roots)
    pci = [c for d in _dirs(roots.sys / "bus" / "pci" / "devices")
           if (c := _pci(roots, d, pi5, size)) is not None]
    usb = [c for d in _dirs(roots.sys / "bus" / "usb" / "devices")
           if (c := _usb(roots, d)) is not None]
    usb.sort(key=lambda c: (c.ids != ":".join(USB_DFU), c.sysname))
    return pci + usb


def _dirs(folder: Path) -> Iterable[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def select(corals: list[Coral], device: str | None) -> tuple[Coral | None, str]:
    """The Coral libedgetpu would open for a device string, and the name to call it by.

    ``usb:N`` and ``pci:N`` count Corals of that kind, ``:N`` all of them; a
    string without an index takes the first (libedgetpu takes the first it has
    not opened itself; another process's is its own business, hence the lock).
    """
    device = device or ""
    kind, _, index = device.partition(":")
    pool = [c for c in corals if not kind or c.kind == kind]
    n = int(index) if index else 0
    chosen = pool[n] if n < len(pool) else None
    if chosen is None:
        return None, device or "the Edge TPU"
    return chosen, name_of(corals, chosen)


def name_of(corals: list[Coral], coral: Coral) -> str:
    """The device string that names ``coral``: 'usb:0', 'pci:1'."""
    return f"{coral.kind}:{[c for c in corals if c.kind == coral.kind].index(coral)}"


def nothing_found_hint(roots: Roots | None = None) -> str:
    """What to check when no Coral shows at all, on this kind of machine."""
    roots = roots or Roots.from_env()
    if is_pi5(roots):
        return PI5_NOTHING
    return ("plug the USB Coral in (lsusb shows 1a6e:089a or 18d1:9302) or seat the PCIe/M.2 "
            "card (lspci -nn shows 1ac1:089a)")
