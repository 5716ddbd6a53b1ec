"""The controller manager: one process running every controller over shared informers, active
only while it holds the kube-controller-manager Lease."""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket

from kubelab.client import ClusterClient, InformerFactory
from kubelab.events import EventRecorder
from kubelab.leaderelection import LeaderElector

log = logging.getLogger("controllers")

# name -> "module:Class"; each controller lives in its own module
CONTROLLERS = {
    "replicaset": "controllers.replicaset:ReplicaSetController",
    "replicationcontroller": "controllers.replicaset:ReplicationControllerController",
    "deployment": "controllers.deployment:DeploymentController",
    "statefulset": "controllers.statefulset:StatefulSetController",
    "daemonset": "controllers.daemonset:DaemonSetController",
    "job": "controllers.job:JobController",
    "cronjob": "controllers.cronjob:CronJobController",
    "endpoints": "controllers.endpoints:EndpointsController",
    "endpointslice": "controllers.endpointslice:EndpointSliceController",
    "nodelifecycle": "controllers.nodelifecycle:NodeLifecycleController",
    "garbagecollector": "controllers.garbagecollector:GarbageCollector",
    "namespace": "controllers.namespace:NamespaceController",
    "serviceaccount": "controllers.serviceaccount:ServiceAccountController",
    "persistentvolume-binder": "controllers.pvbinder:PersistentVolumeBinder",
    "service-lb": "controllers.servicelb:ServiceLoadBalancerController",
    "root-ca-cert-publisher": "controllers.rootcacertpublisher:RootCACertPublisher",
    "horizontalpodautoscaling": "controllers.horizontalpodautoscaler:"
                                "HorizontalPodAutoscalerController",
}


def load(names: list[str]) -> list[type]:
    out = []
    for name in names:
        spec = CONTROLLERS[name]
        mod, _, cls = spec.partition(":")
        try:
            out.append(getattr(importlib.import_module(mod), cls))
        except (ImportError, AttributeError) as e:
            log.warning("controller %s not available: %s", name, e)
    return out


class ControllerManager:
    def __init__(self, client: ClusterClient, names: list[str], identity: str | None = None,
                 leader_elect: bool = True, options: dict | None = None):
        self.client = client
        self.options = options or {}  # flags some controllers read (root_ca_file)
        self.identity = identity or f"{socket.gethostname()}_{id(self):x}"
        self.leader_elect = leader_elect
        self.informers = InformerFactory(client)
        self.recorder = EventRecorder(client, "kube-controller-manager")
        self.classes = load(names)
        self.controllers = []
        self.elector = LeaderElector(client, "kube-controller-manager", self.identity)
        self.active = False

    async def _lead(self) -> None:
        self.controllers = [cls(self.client, self.informers, self.recorder)
                            for cls in self.classes]
        for c in self.controllers:
            c.options = self.options
        self.informers.start()
        await self.informers.wait_synced()
        self.active = True
        log.info("controllers running: %s", ", ".join(c.name for c in self.controllers))
        tasks = [asyncio.create_task(c.run(), name=c.name) for c in self.controllers]
        try:
            await asyncio.Event().wait()  # lead until cancelled (lease lost or shutdown)
        finally:
            for t in tasks:
                t.cancel()

    async def run(self) -> None:
        """Lead while holding the Lease. After losing it (e.g. the API server was away longer
        than the renew deadline) every controller and informer is stopped before this process
        competes again with fresh caches, so two managers never act at once."""
        if not self.leader_elect:
            await self._lead()
            return
        while True:
            await self.elector.run(self._lead)
            self.active = False
            await self.informers.stop()
            self.informers = InformerFactory(self.client)
            self.elector = LeaderElector(self.client, "kube-controller-manager", self.identity)
            log.warning("lost leadership; competing again")
