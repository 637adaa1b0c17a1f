#!/bin/sh
# wtpd's upgrade hook: an example of the seed's upgrade.sh (POSIX sh; runs under busybox ash).
#
# Install as /usr/libexec/wtpd/upgrade.sh and name it in wtpd.toml:
#   [hooks]
#   upgrade = "/usr/libexec/wtpd/upgrade.sh"
#   timeout = 30
#
# wtpd calls it with ONE argument, the stage, as the seed's AP does
# ("upgrade.sh: Script called with args:[PRECHECK]": wtpd logs that line itself), and logs
# every line this script prints (stdout and stderr) as "upgrade.sh: ...".
#
#   PRECHECK     a download is about to start. A non-zero exit refuses it: the last line
#                printed is the reason (log, `wtpd status`, the controller).
#   PREDOWNLOAD  the last block is stored in $WTPD_IMAGE; it is verified next.
#   UPGRADE      the image is verified; slot $WTPD_SLOT_TARGET is written next.
#   ABORT        a download or install failed or was torn down ($WTPD_REASON).
#   ACTIVATE     the boot slot now points at $WTPD_SLOT_TARGET; a reboot follows.
#   MARK_GOOD    the booted slot, on trial, reached Run and was marked good.
#
# Environment: WTPD_STAGE, WTPD_VERSION (the image concerned), WTPD_RUNNING_VERSION,
# WTPD_IMAGE (the download file), WTPD_DOWNLOAD_DIR, WTPD_REQUIRED_KIB, WTPD_IMAGE_TYPE
# (hardware type), WTPD_BOARD, WTPD_SLOT_BOOTED, WTPD_SLOT_TARGET (empty without A/B slots),
# WTPD_PREDOWNLOAD (1 in Run), WTPD_REASON (ABORT). Only PRECHECK's exit status counts; the
# script is killed (its whole process group) after the configured timeout.

# An operator's switch: while this file exists, no download starts.
NO_UPGRADE=${WTPD_NO_UPGRADE_FILE:-/etc/wtpd/no-upgrade}
# Where the before-upgrade log goes (the seed's "Creating before-upgrade.log").
LOG_DIR=${WTPD_DOWNLOAD_DIR:-/tmp}

stage=$1
echo "do $stage, part ${WTPD_SLOT_BOOTED:-?} is active part"

case "$stage" in
PRECHECK)
	echo "Cleanup tmp files ..."
	rm -f "$LOG_DIR/before-upgrade.log"
	if [ -e "$NO_UPGRADE" ]; then
		echo "upgrades are disabled: $NO_UPGRADE exists"
		exit 1
	fi
	required=${WTPD_REQUIRED_KIB:-0}
	mkdir -p "$LOG_DIR"
	# df -P: one line per file system, whatever the length of its name.
	available=$(df -Pk "$LOG_DIR" 2>/dev/null | awk 'NR == 2 { print $4 }')
	if [ -z "$available" ]; then
		echo "/tmp space: cannot read the free space of $LOG_DIR"
		exit 1
	fi
	if [ "$available" -lt "$required" ]; then
		echo "/tmp space: NOT OK available $available, required $required"
		exit 1
	fi
	echo "/tmp space: OK available $available, required $required"
	;;
PREDOWNLOAD)
	echo "Creating before-upgrade.log"
	{
		date
		echo "running ${WTPD_RUNNING_VERSION:-?} on ${WTPD_SLOT_BOOTED:-?}"
		echo "image ${WTPD_VERSION:-?} for ${WTPD_IMAGE_TYPE:-?} at ${WTPD_IMAGE:-?}"
	} >"$LOG_DIR/before-upgrade.log"
	echo "Start doing upgrade arg1=$1 arg2=$2 arg3=$3 ... "
	echo "Using image ${WTPD_IMAGE:-?} on ${WTPD_BOARD:-?} ... "
	;;
UPGRADE)
	echo "Writing ${WTPD_VERSION:-?} to slot ${WTPD_SLOT_TARGET:-?}"
	;;
ABORT)
	echo "Cleanup tmp files ..."
	rm -f "$LOG_DIR/before-upgrade.log"
	[ -n "$WTPD_REASON" ] && echo "aborted: $WTPD_REASON"
	;;
ACTIVATE)
	echo "Slot ${WTPD_SLOT_TARGET:-?} activated: rebooting into ${WTPD_VERSION:-?}"
	;;
MARK_GOOD)
	echo "Slot ${WTPD_SLOT_BOOTED:-?} (${WTPD_VERSION:-?}) is good"
	rm -f "$LOG_DIR/before-upgrade.log"
	;;
*)
	# A stage this script does not know (a newer agent): nothing to do, no refusal.
	echo "nothing to do for '$stage'"
	;;
esac
exit 0
