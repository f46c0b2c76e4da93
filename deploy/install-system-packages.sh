#!/usr/bin/env bash
# Debian packages the node's tests and tools use: dcmtk (storescu/storescp as scanner and
# reference), Orthanc (the PACS in tests), dicom3tools (dciodvfy) and pixelmed-apps
# (DicomSRValidator, kept warm in one JVM: default-jdk-headless) to validate the SR and
# SEG against the standard, openssl (the TLS
# tests make their certificates with it), systemd (systemd-analyze checks
# deploy/hemex.service), postgresql (the suite's second pass keeps the node's state in a
# real PostgreSQL server, which the tests start in a temporary folder), chromium and
# chromium-driver (the web console's tests drive a real headless browser with selenium);
# python3-venv where Debian's python3 lacks it (deploy/*.sh make a virtual environment).
#
# Debian's orthanc and postgresql packages would start a system Orthanc on ports 4242/8042
# and a PostgreSQL cluster on 5432, and enable both at boot; the tests start their own on
# free ports, and a node host must not run a stray PACS or database. So no service is
# started while the packages install, and both are disabled and stopped afterwards (also
# when they were installed before).
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
needed=()
python3 -c "import ensurepip, venv" 2>/dev/null || needed+=(python3-venv)
command -v storescu >/dev/null || needed+=(dcmtk)
command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || needed+=(orthanc)
command -v dciodvfy >/dev/null || needed+=(dicom3tools)
command -v DicomSRValidator >/dev/null || needed+=(pixelmed-apps)
# The JDK's compiler runs the warm DicomSRValidator (daemon/report/java/, source-file mode).
command -v javac >/dev/null || needed+=(default-jdk-headless)
command -v openssl >/dev/null || needed+=(openssl)
command -v systemd-analyze >/dev/null || needed+=(systemd)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || needed+=(postgresql)
command -v chromium >/dev/null || needed+=(chromium)
command -v chromedriver >/dev/null || needed+=(chromium-driver)

if [ ${#needed[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # invoke-rc.d and deb-systemd-invoke start nothing while policy-rc.d exits 101.
    # Keep a policy the machine already has (container images often ship one).
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# hemex: start no service during the install\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 0755 "$policy"
        trap '$SUDO rm -f "$policy"' EXIT
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${needed[@]}"
    if [ "$(trap -p EXIT)" ]; then $SUDO rm -f "$policy"; trap - EXIT; fi
fi

# Disable at boot: systemctl edits the unit links without a running systemd (it also
# disables the SysV rc links); update-rc.d where systemctl is absent.
for service in orthanc postgresql; do
    if [ -e "/lib/systemd/system/$service.service" ] || [ -e "/etc/init.d/$service" ]; then
        if command -v systemctl >/dev/null; then
            $SUDO systemctl disable --quiet "$service" 2>/dev/null || $SUDO update-rc.d "$service" disable >/dev/null
        else
            $SUDO update-rc.d "$service" disable >/dev/null
        fi
        if [ -d /run/systemd/system ]; then
            $SUDO systemctl stop "$service"
        elif [ -x "/etc/init.d/$service" ]; then
            $SUDO "/etc/init.d/$service" stop >/dev/null 2>&1 || true  # "not running" is fine
        fi
    fi
done
