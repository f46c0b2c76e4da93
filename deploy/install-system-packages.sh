#!/usr/bin/env bash
# Debian packages the node's tests and tools use: dcmtk (storescu/storescp as scanner and
# reference), Orthanc (the PACS in tests), dicom3tools (dciodvfy) and pixelmed-apps
# (DicomSRValidator) to validate the SR and SEG against the standard; python3-venv where
# Debian's python3 lacks it (deploy/*.sh make a virtual environment).
set -euo pipefail
needed=()
python3 -c "import ensurepip, venv" 2>/dev/null || needed+=(python3-venv)
command -v storescu >/dev/null || needed+=(dcmtk)
command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || needed+=(orthanc)
command -v dciodvfy >/dev/null || needed+=(dicom3tools)
command -v DicomSRValidator >/dev/null || needed+=(pixelmed-apps)
if [ ${#needed[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${needed[@]}"
    # The Debian package starts a system Orthanc on 4242/8042; tests start their own.
    $SUDO service orthanc stop >/dev/null 2>&1 || true
fi
