"""The station as a PLC sees it: the layout the address map is made from, and the servers.

The run and ``coral-mfg plc-map`` make the layout with the same function, so the map a
person prints is the one the station serves: the cameras in the config's order (the
Modbus block of each is its place among all the config's cameras, disabled ones too),
the zones each starts with, its lines and presence checks, and the grades of its
classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from coral_mfg.analytics.inspection import ANOMALOUS_COUNT, ANOMALY_GRADES
from coral_mfg.config.cameras import CameraConfig
from coral_mfg.config.settings import Settings
from coral_mfg.config.zones import csv_spec
from coral_mfg.core.errors import ConfigError
from coral_mfg.inference.labels import LABELS_FILE, read_labels
from coral_mfg.inference.plan import plan_models
from coral_mfg.outputs.plc import PlcServer
from coral_mfg.outputs.plc_map import Baseline, CameraLayout, StationLayout
from coral_mfg.runtime.zone_watch import zone_source

#: A camera's grades, in the classifier's order.
Grades = Callable[[CameraConfig], tuple[str, ...]]


def station_layout(settings: Settings, grades: Grades) -> StationLayout:
    """The station's layout; ``grades`` names an inspection camera's grades."""
    everyone = settings.cameras or settings.camera_list()
    slots = {c.name: i + 1 for i, c in enumerate(everyone)}
    cameras = []
    for camera in settings.camera_list():
        zones: tuple[str, ...] = ()
        if camera.safety:
            source = zone_source(settings, camera)
            specs = (csv_spec(source.path),) if source.kind == "csv" else camera.zones
            zones = tuple(z.name for z in specs)
        cameras.append(CameraLayout(
            name=camera.name, slot=slots[camera.name], zones=zones,
            lines=tuple((line.name, line.directions) for line in camera.lines),
            presence=tuple(p.name for p in camera.presence),
            grades=grades(camera) if camera.inspection else (),
            reject=camera.reject, reject_line=camera.reject_line,
            reject_pulse_s=camera.reject_pulse_ms / 1000.0))
    return StationLayout(settings.station, tuple(cameras))


def file_grades(settings: Settings) -> Grades:
    """Grades read from the label files (what the run reads once the models are loaded):
    a camera's own classifier's labels, else the station's."""
    station = tuple(read_labels(plan_models(settings.models).classifier_labels).values())

    def classifier(camera: CameraConfig) -> tuple[str, ...]:
        if camera.classifier_model is None:
            return station
        path = camera.classifier_labels or camera.classifier_model.parent / LABELS_FILE
        return tuple(read_labels(path).values())

    def grades(camera: CameraConfig) -> tuple[str, ...]:
        """With an anomaly model, its count beside the grades; without a classifier, its
        verdicts are the grades (as the run counts them)."""
        classify = settings.models.classify if camera.classify is None else camera.classify
        if (camera.anomaly or settings.models.anomaly) is None:
            return classifier(camera)
        if not classify:
            return tuple(ANOMALY_GRADES.values())
        return (*classifier(camera), ANOMALOUS_COUNT)

    return grades


def plc_servers(settings: Settings, layout: StationLayout) -> Sequence[PlcServer]:
    """The servers the settings ask for, checked; the station's certificate made if it is
    missing. Nothing listens until the run starts them.

    The server libraries load here, only for a station that serves a PLC: together they
    take most of a second to import, on every start."""
    servers: list[PlcServer] = []
    if settings.opcua.opcua is None and settings.modbus.modbus is None:
        return servers
    from coral_mfg.outputs.modbus import ModbusServer
    from coral_mfg.outputs.opcua import OpcuaServer, ensure_certificate, opcua_plan

    baseline = Baseline()
    if settings.opcua.opcua is not None:
        plan = opcua_plan(settings.opcua, layout)
        ensure_certificate(plan, layout.station)
        servers.append(OpcuaServer(plan, layout, baseline))
    if settings.modbus.modbus is not None:
        for camera in layout.cameras:
            problem = camera.too_many()
            if problem is not None:
                raise ConfigError(f"--modbus: {problem}; split the camera's checks over "
                                  "cameras, or serve them over OPC UA only")
        servers.append(ModbusServer(settings.modbus.modbus, layout, baseline))
    return servers
