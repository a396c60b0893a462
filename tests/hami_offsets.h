/* Where HAMi's node monitor reads a region file: the offsets of its v1
 * reader (pkg/monitor/nvidia/v1, Go aligning uint64 to 8), as literal
 * numbers, independent of src/region/layout.h's structs, so that tests
 * check the file's bytes as the monitor finds them. */
#ifndef HAMI_OFFSETS_H
#define HAMI_OFFSETS_H

#define OFF_MAGIC 0
#define OFF_MAJOR 4
#define OFF_MINOR 8
#define OFF_DEVICE_NUM 56
#define OFF_UUIDS 64
#define UUID_LEN 96
#define OFF_LIMIT 1600
#define OFF_SM_LIMIT 1728
#define OFF_PROCS 1856
#define SLOT_SIZE 1960
#define SLOT_PID 0
#define SLOT_HOSTPID 4
#define SLOT_USED 8      /* [16] x 64 bytes: the parts below, per device */
#define SLOT_USED_SIZE 64
#define USED_CONTEXT 0
#define USED_MODULE 8
#define USED_DATA 16     /* the monitor's "buffer" */
#define USED_TOTAL 32
#define SLOT_STATUS 1928
#define OFF_PROCNUM 2008896
#define OFF_UTIL_SWITCH 2008900
#define OFF_RECENT_KERNEL 2008904
#define OFF_PRIORITY 2008908
#define HAMI_V0_SIZE 1197897 /* the older layout's size, told apart by size */
#define HAMI_V1_SIZE 2008952
#define HAMI_MAGIC_VALUE 19920718

#endif
