"""The s390x CPU models of QEMU 7.2: definitions, features, and the model a machine runs.

A CPU model is a CPU definition (a machine generation: CPU type, generation, GA
level) plus a set of features.  Each definition has three feature sets: *base*
(what the static ``-base`` model has), *default* (what the plain model has) and
*full* (every feature that generation can have at all).  A feature is a
facility bit of STFLE, an SCLP bit, or a subfunction of an instruction (PLO,
PTFF, the crypto instructions); a *group* names a set of features (``msa4``).

The tables are QEMU 7.2's (target/s390x: its feature definitions, the feature
lists per generation, the CPU definitions, the dependency checks), and
tests/test_cpu_models.py checks them against qemu-system-s390x 7.2 itself.  The
rules are QEMU's too: how ``-cpu`` properties apply, how a model is checked
against what the accelerator offers, how models expand, compare and combine for
QMP, the order in which features are named, and the texts.

Where vmd differs: its accelerator is its CPU engine, which does not execute
four facilities that QEMU's TCG offers (:data:`ENGINE_LACKS`).  vmd's ``max``
model is TCG's without them; the ``qemu`` model, which is defined as what the
emulator offers, has them masked; a model that asks for them is refused with
QEMU's text for features the accelerator does not have.

A feature set is an ``int`` bitmap: bit *i* stands for ``FEATURES[i]``, in
QEMU's order of definition, which is also the order QEMU names features in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from vmd.errors import DeviceNotFound, GenericError, VmdError

# -- features -----------------------------------------------------------------------------
# Where a feature shows: the facility list (STFL, STFLE), SCLP Read SCP Info (configuration
# characteristics, their extension, byte 134), the SCLP CPU entries, nowhere (misc), or the
# query function of an instruction (the bit is the function code).
STFL = "stfl"
SCLP_CONF_CHAR = "sclp-conf-char"
SCLP_CONF_CHAR_EXT = "sclp-conf-char-ext"
SCLP_FAC134 = "sclp-fac134"
SCLP_CPU = "sclp-cpu"
MISC = "misc"
PLO, PTFF, KMAC, KMC, KM, KIMD, KLMD, PCKMO = "plo", "ptff", "kmac", "kmc", "km", "kimd", "klmd", "pckmo"
KMCTR, KMF, KMO, PCC, PPNO, KMA, KDSA, SORTL, DFLTCC = (
    "kmctr", "kmf", "kmo", "pcc", "ppno", "kma", "kdsa", "sortl", "dfltcc")

#: (name, kind, bit, description), in QEMU 7.2's order of definition
_FEATURE_TABLE: tuple[tuple[str, str, int, str], ...] = (
    ("esan3", STFL, 0, "Instructions marked as n3"),
    ("zarch", STFL, 1, "z/Architecture architectural mode"),
    ("dateh", STFL, 3, "DAT-enhancement facility"),
    ("idtes", STFL, 4, "IDTE selective TLB segment-table clearing"),
    ("idter", STFL, 5, "IDTE selective TLB region-table clearing"),
    ("asnlxr", STFL, 6, "ASN-and-LX reuse facility"),
    ("stfle", STFL, 7, "Store-facility-list-extended facility"),
    ("edat", STFL, 8, "Enhanced-DAT facility"),
    ("srs", STFL, 9, "Sense-running-status facility"),
    ("csske", STFL, 10, "Conditional-SSKE facility"),
    ("ctop", STFL, 11, "Configuration-topology facility"),
    ("apqci", STFL, 12, "Query AP Configuration Information facility"),
    ("ipter", STFL, 13, "IPTE-range facility"),
    ("nonqks", STFL, 14, "Nonquiescing key-setting facility"),
    ("apft", STFL, 15, "AP Facilities Test facility"),
    ("etf2", STFL, 16, "Extended-translation facility 2"),
    ("msa-base", STFL, 17, "Message-security-assist facility (excluding subfunctions)"),
    ("ldisp", STFL, 18, "Long-displacement facility"),
    ("ldisphp", STFL, 19, "Long-displacement facility has high performance"),
    ("hfpm", STFL, 20, "HFP-multiply-add/subtract facility"),
    ("eimm", STFL, 21, "Extended-immediate facility"),
    ("etf3", STFL, 22, "Extended-translation facility 3"),
    ("hfpue", STFL, 23, "HFP-unnormalized-extension facility"),
    ("etf2eh", STFL, 24, "ETF2-enhancement facility"),
    ("stckf", STFL, 25, "Store-clock-fast facility"),
    ("parseh", STFL, 26, "Parsing-enhancement facility"),
    ("mvcos", STFL, 27, "Move-with-optional-specification facility"),
    ("tods-base", STFL, 28, "TOD-clock-steering facility (excluding subfunctions)"),
    ("etf3eh", STFL, 30, "ETF3-enhancement facility"),
    ("ectg", STFL, 31, "Extract-CPU-time facility"),
    ("csst", STFL, 32, "Compare-and-swap-and-store facility"),
    ("csst2", STFL, 33, "Compare-and-swap-and-store facility 2"),
    ("ginste", STFL, 34, "General-instructions-extension facility"),
    ("exrl", STFL, 35, "Execute-extensions facility"),
    ("emon", STFL, 36, "Enhanced-monitor facility"),
    ("fpe", STFL, 37, "Floating-point extension facility"),
    ("opc", STFL, 38, "Order Preserving Compression facility"),
    ("sprogp", STFL, 40, "Set-program-parameters facility"),
    ("fpseh", STFL, 41, "Floating-point-support-enhancement facilities"),
    ("dfp", STFL, 42, "DFP (decimal-floating-point) facility"),
    ("dfphp", STFL, 43, "DFP (decimal-floating-point) facility has high performance"),
    ("pfpo", STFL, 44, "PFPO instruction"),
    ("stfle45", STFL, 45, "Various facilities introduced with z196"),
    ("cmpsceh", STFL, 47, "CMPSC-enhancement facility"),
    ("dfpzc", STFL, 48, "Decimal-floating-point zoned-conversion facility"),
    ("stfle49", STFL, 49, "Various facilities introduced with zEC12"),
    ("cte", STFL, 50, "Constrained transactional-execution facility"),
    ("ltlbc", STFL, 51, "Local-TLB-clearing facility"),
    ("iacc2", STFL, 52, "Interlocked-access facility 2"),
    ("stfle53", STFL, 53, "Various facilities introduced with z13"),
    ("eec", STFL, 54, "Entropy encoding compression facility"),
    ("msa5-base", STFL, 57, "Message-security-assist-extension-5 facility (excluding subfunctions)"),
    ("minste2", STFL, 58, "Miscellaneous-instruction-extensions facility 2"),
    ("sema", STFL, 59, "Semaphore-assist facility"),
    ("tsi", STFL, 60, "Time-slice Instrumentation facility"),
    ("minste3", STFL, 61, "Miscellaneous-Instruction-Extensions Facility 3"),
    ("ri", STFL, 64, "CPU runtime-instrumentation facility"),
    ("apqi", STFL, 65, "AP-Queue interruption facility"),
    ("zpci", STFL, 69, "z/PCI facility"),
    ("aen", STFL, 71, "General-purpose-adapter-event-notification facility"),
    ("ais", STFL, 72, "General-purpose-adapter-interruption-suppression facility"),
    ("te", STFL, 73, "Transactional-execution facility"),
    ("sthyi", STFL, 74, "Store-hypervisor-information facility"),
    ("aefsi", STFL, 75, "Access-exception-fetch/store-indication facility"),
    ("msa3-base", STFL, 76, "Message-security-assist-extension-3 facility (excluding subfunctions)"),
    ("msa4-base", STFL, 77, "Message-security-assist-extension-4 facility (excluding subfunctions)"),
    ("edat2", STFL, 78, "Enhanced-DAT facility 2"),
    ("dfppc", STFL, 80, "Decimal-floating-point packed-conversion facility"),
    ("ppa15", STFL, 81, "PPA15 is installed"),
    ("bpb", STFL, 82, "Branch prediction blocking"),
    ("vx", STFL, 129, "Vector facility"),
    ("iep", STFL, 130, "Instruction-execution-protection facility"),
    ("sea_esop2", STFL, 131, "Side-effect-access facility and Enhanced-suppression-on-protection facility 2"),
    ("gs", STFL, 133, "Guarded-storage facility"),
    ("vxpd", STFL, 134, "Vector packed decimal facility"),
    ("vxeh", STFL, 135, "Vector enhancements facility"),
    ("mepoch", STFL, 139, "Multiple-epoch facility"),
    ("els", STFL, 140, "Extended-length SCCB facility"),
    ("tpei", STFL, 144, "Test-pending-external-interruption facility"),
    ("irbm", STFL, 145, "Insert-reference-bits-multiple facility"),
    ("msa8-base", STFL, 146, "Message-security-assist-extension-8 facility (excluding subfunctions)"),
    ("cmmnt", STFL, 147, "CMM: ESSA-enhancement (no translate) facility"),
    ("vxeh2", STFL, 148, "Vector Enhancements facility 2"),
    ("esort-base", STFL, 150, "Enhanced-sort facility (excluding subfunctions)"),
    ("deflate-base", STFL, 151, "Deflate-conversion facility (excluding subfunctions)"),
    ("vxpdeh", STFL, 152, "Vector-Packed-Decimal-Enhancement Facility"),
    ("msa9-base", STFL, 155, "Message-security-assist-extension-9 facility (excluding subfunctions)"),
    ("etoken", STFL, 156, "Etoken facility"),
    ("unpack", STFL, 161, "Unpack facility"),
    ("nnpa", STFL, 165, "NNPA facility"),
    ("vxpdeh2", STFL, 192, "Vector-Packed-Decimal-Enhancement facility 2"),
    ("beareh", STFL, 193, "BEAR-enhancement facility"),
    ("rdp", STFL, 194, "Reset-DAT-protection facility"),
    ("pai", STFL, 196, "Processor-Activity-Instrumentation facility"),
    ("paie", STFL, 197, "Processor-Activity-Instrumentation extension-1"),
    ("gsls", SCLP_CONF_CHAR, 40, "SIE: Guest-storage-limit-suppression facility"),
    ("esop", SCLP_CONF_CHAR, 46, "Enhanced-suppression-on-protection facility"),
    ("hpma2", SCLP_CONF_CHAR, 90, "Host page management assist 2 Facility"),
    ("kss", SCLP_CONF_CHAR, 151, "SIE: Keyless-subset facility"),
    ("64bscao", SCLP_CONF_CHAR_EXT, 0, "SIE: 64-bit-SCAO facility"),
    ("cmma", SCLP_CONF_CHAR_EXT, 1, "SIE: Collaborative-memory-management assist"),
    ("pfmfi", SCLP_CONF_CHAR_EXT, 9, "SIE: PFMF interpretation facility"),
    ("ibs", SCLP_CONF_CHAR_EXT, 10, "SIE: Interlock-and-broadcast-suppression facility"),
    ("diag318", SCLP_FAC134, 0, "Control program name and version codes"),
    ("sief2", SCLP_CPU, 4, "SIE: interception format 2 (Virtual SIE)"),
    ("skey", SCLP_CPU, 5, "SIE: Storage-key facility"),
    ("gpereh", SCLP_CPU, 10, "SIE: Guest-PER enhancement facility"),
    ("siif", SCLP_CPU, 11, "SIE: Shared IPTE-interlock facility"),
    ("sigpif", SCLP_CPU, 12, "SIE: SIGP interpretation facility"),
    ("ib", SCLP_CPU, 42, "SIE: Intervention bypass facility"),
    ("cei", SCLP_CPU, 43, "SIE: Conditional-external-interception facility"),
    ("dateh2", MISC, 0, "DAT-enhancement facility 2"),
    ("cmm", MISC, 0, "Collaborative-memory-management facility"),
    ("ap", MISC, 0, "AP instructions installed"),
    ("plo-cl", PLO, 0, "PLO Compare and load (32 bit in general registers)"),
    ("plo-clg", PLO, 1, "PLO Compare and load (64 bit in parameter list)"),
    ("plo-clgr", PLO, 2, "PLO Compare and load (32 bit in general registers)"),
    ("plo-clx", PLO, 3, "PLO Compare and load (128 bit in parameter list)"),
    ("plo-cs", PLO, 4, "PLO Compare and swap (32 bit in general registers)"),
    ("plo-csg", PLO, 5, "PLO Compare and swap (64 bit in parameter list)"),
    ("plo-csgr", PLO, 6, "PLO Compare and swap (32 bit in general registers)"),
    ("plo-csx", PLO, 7, "PLO Compare and swap (128 bit in parameter list)"),
    ("plo-dcs", PLO, 8, "PLO Double compare and swap (32 bit in general registers)"),
    ("plo-dcsg", PLO, 9, "PLO Double compare and swap (64 bit in parameter list)"),
    ("plo-dcsgr", PLO, 10, "PLO Double compare and swap (32 bit in general registers)"),
    ("plo-dcsx", PLO, 11, "PLO Double compare and swap (128 bit in parameter list)"),
    ("plo-csst", PLO, 12, "PLO Compare and swap and store (32 bit in general registers)"),
    ("plo-csstg", PLO, 13, "PLO Compare and swap and store (64 bit in parameter list)"),
    ("plo-csstgr", PLO, 14, "PLO Compare and swap and store (32 bit in general registers)"),
    ("plo-csstx", PLO, 15, "PLO Compare and swap and store (128 bit in parameter list)"),
    ("plo-csdst", PLO, 16, "PLO Compare and swap and double store (32 bit in general registers)"),
    ("plo-csdstg", PLO, 17, "PLO Compare and swap and double store (64 bit in parameter list)"),
    ("plo-csdstgr", PLO, 18, "PLO Compare and swap and double store (32 bit in general registers)"),
    ("plo-csdstx", PLO, 19, "PLO Compare and swap and double store (128 bit in parameter list)"),
    ("plo-cstst", PLO, 20, "PLO Compare and swap and triple store (32 bit in general registers)"),
    ("plo-cststg", PLO, 21, "PLO Compare and swap and triple store (64 bit in parameter list)"),
    ("plo-cststgr", PLO, 22, "PLO Compare and swap and triple store (32 bit in general registers)"),
    ("plo-cststx", PLO, 23, "PLO Compare and swap and triple store (128 bit in parameter list)"),
    ("ptff-qto", PTFF, 1, "PTFF Query TOD Offset"),
    ("ptff-qsi", PTFF, 2, "PTFF Query Steering Information"),
    ("ptff-qpc", PTFF, 3, "PTFF Query Physical Clock"),
    ("ptff-qui", PTFF, 4, "PTFF Query UTC Information"),
    ("ptff-qtou", PTFF, 5, "PTFF Query TOD Offset User"),
    ("ptff-qsie", PTFF, 10, "PTFF Query Steering Information Extended"),
    ("ptff-qtoue", PTFF, 13, "PTFF Query TOD Offset User Extended"),
    ("ptff-sto", PTFF, 65, "PTFF Set TOD Offset"),
    ("ptff-stou", PTFF, 69, "PTFF Set TOD Offset User"),
    ("ptff-stoe", PTFF, 73, "PTFF Set TOD Offset Extended"),
    ("ptff-stoue", PTFF, 77, "PTFF Set TOD Offset User Extended"),
    ("kmac-dea", KMAC, 1, "KMAC DEA"),
    ("kmac-tdea-128", KMAC, 2, "KMAC TDEA-128"),
    ("kmac-tdea-192", KMAC, 3, "KMAC TDEA-192"),
    ("kmac-edea", KMAC, 9, "KMAC Encrypted-DEA"),
    ("kmac-etdea-128", KMAC, 10, "KMAC Encrypted-TDEA-128"),
    ("kmac-etdea-192", KMAC, 11, "KMAC Encrypted-TDEA-192"),
    ("kmac-aes-128", KMAC, 18, "KMAC AES-128"),
    ("kmac-aes-192", KMAC, 19, "KMAC AES-192"),
    ("kmac-aes-256", KMAC, 20, "KMAC AES-256"),
    ("kmac-eaes-128", KMAC, 26, "KMAC Encrypted-AES-128"),
    ("kmac-eaes-192", KMAC, 27, "KMAC Encrypted-AES-192"),
    ("kmac-eaes-256", KMAC, 28, "KMAC Encrypted-AES-256"),
    ("kmc-dea", KMC, 1, "KMC DEA"),
    ("kmc-tdea-128", KMC, 2, "KMC TDEA-128"),
    ("kmc-tdea-192", KMC, 3, "KMC TDEA-192"),
    ("kmc-edea", KMC, 9, "KMC Encrypted-DEA"),
    ("kmc-etdea-128", KMC, 10, "KMC Encrypted-TDEA-128"),
    ("kmc-etdea-192", KMC, 11, "KMC Encrypted-TDEA-192"),
    ("kmc-aes-128", KMC, 18, "KMC AES-128"),
    ("kmc-aes-192", KMC, 19, "KMC AES-192"),
    ("kmc-aes-256", KMC, 20, "KMC AES-256"),
    ("kmc-eaes-128", KMC, 26, "KMC Encrypted-AES-128"),
    ("kmc-eaes-192", KMC, 27, "KMC Encrypted-AES-192"),
    ("kmc-eaes-256", KMC, 28, "KMC Encrypted-AES-256"),
    ("kmc-prng", KMC, 67, "KMC PRNG"),
    ("km-dea", KM, 1, "KM DEA"),
    ("km-tdea-128", KM, 2, "KM TDEA-128"),
    ("km-tdea-192", KM, 3, "KM TDEA-192"),
    ("km-edea", KM, 9, "KM Encrypted-DEA"),
    ("km-etdea-128", KM, 10, "KM Encrypted-TDEA-128"),
    ("km-etdea-192", KM, 11, "KM Encrypted-TDEA-192"),
    ("km-aes-128", KM, 18, "KM AES-128"),
    ("km-aes-192", KM, 19, "KM AES-192"),
    ("km-aes-256", KM, 20, "KM AES-256"),
    ("km-eaes-128", KM, 26, "KM Encrypted-AES-128"),
    ("km-eaes-192", KM, 27, "KM Encrypted-AES-192"),
    ("km-eaes-256", KM, 28, "KM Encrypted-AES-256"),
    ("km-xts-aes-128", KM, 50, "KM XTS-AES-128"),
    ("km-xts-aes-256", KM, 52, "KM XTS-AES-256"),
    ("km-xts-eaes-128", KM, 58, "KM XTS-Encrypted-AES-128"),
    ("km-xts-eaes-256", KM, 60, "KM XTS-Encrypted-AES-256"),
    ("kimd-sha-1", KIMD, 1, "KIMD SHA-1"),
    ("kimd-sha-256", KIMD, 2, "KIMD SHA-256"),
    ("kimd-sha-512", KIMD, 3, "KIMD SHA-512"),
    ("kimd-sha3-224", KIMD, 32, "KIMD SHA3-224"),
    ("kimd-sha3-256", KIMD, 33, "KIMD SHA3-256"),
    ("kimd-sha3-384", KIMD, 34, "KIMD SHA3-384"),
    ("kimd-sha3-512", KIMD, 35, "KIMD SHA3-512"),
    ("kimd-shake-128", KIMD, 36, "KIMD SHAKE-128"),
    ("kimd-shake-256", KIMD, 37, "KIMD SHAKE-256"),
    ("kimd-ghash", KIMD, 65, "KIMD GHASH"),
    ("klmd-sha-1", KLMD, 1, "KLMD SHA-1"),
    ("klmd-sha-256", KLMD, 2, "KLMD SHA-256"),
    ("klmd-sha-512", KLMD, 3, "KLMD SHA-512"),
    ("klmd-sha3-224", KLMD, 32, "KLMD SHA3-224"),
    ("klmd-sha3-256", KLMD, 33, "KLMD SHA3-256"),
    ("klmd-sha3-384", KLMD, 34, "KLMD SHA3-384"),
    ("klmd-sha3-512", KLMD, 35, "KLMD SHA3-512"),
    ("klmd-shake-128", KLMD, 36, "KLMD SHAKE-128"),
    ("klmd-shake-256", KLMD, 37, "KLMD SHAKE-256"),
    ("pckmo-edea", PCKMO, 1, "PCKMO Encrypted-DEA-Key"),
    ("pckmo-etdea-128", PCKMO, 2, "PCKMO Encrypted-TDEA-128-Key"),
    ("pckmo-etdea-192", PCKMO, 3, "PCKMO Encrypted-TDEA-192-Key"),
    ("pckmo-aes-128", PCKMO, 18, "PCKMO Encrypted-AES-128-Key"),
    ("pckmo-aes-192", PCKMO, 19, "PCKMO Encrypted-AES-192-Key"),
    ("pckmo-aes-256", PCKMO, 20, "PCKMO Encrypted-AES-256-Key"),
    ("pckmo-ecc-p256", PCKMO, 32, "PCKMO Encrypt-ECC-P256-Key"),
    ("pckmo-ecc-p384", PCKMO, 33, "PCKMO Encrypt-ECC-P384-Key"),
    ("pckmo-ecc-p521", PCKMO, 34, "PCKMO Encrypt-ECC-P521-Key"),
    ("pckmo-ecc-ed25519", PCKMO, 40, "PCKMO Encrypt-ECC-Ed25519-Key"),
    ("pckmo-ecc-ed448", PCKMO, 41, "PCKMO Encrypt-ECC-Ed448-Key"),
    ("kmctr-dea", KMCTR, 1, "KMCTR DEA"),
    ("kmctr-tdea-128", KMCTR, 2, "KMCTR TDEA-128"),
    ("kmctr-tdea-192", KMCTR, 3, "KMCTR TDEA-192"),
    ("kmctr-edea", KMCTR, 9, "KMCTR Encrypted-DEA"),
    ("kmctr-etdea-128", KMCTR, 10, "KMCTR Encrypted-TDEA-128"),
    ("kmctr-etdea-192", KMCTR, 11, "KMCTR Encrypted-TDEA-192"),
    ("kmctr-aes-128", KMCTR, 18, "KMCTR AES-128"),
    ("kmctr-aes-192", KMCTR, 19, "KMCTR AES-192"),
    ("kmctr-aes-256", KMCTR, 20, "KMCTR AES-256"),
    ("kmctr-eaes-128", KMCTR, 26, "KMCTR Encrypted-AES-128"),
    ("kmctr-eaes-192", KMCTR, 27, "KMCTR Encrypted-AES-192"),
    ("kmctr-eaes-256", KMCTR, 28, "KMCTR Encrypted-AES-256"),
    ("kmf-dea", KMF, 1, "KMF DEA"),
    ("kmf-tdea-128", KMF, 2, "KMF TDEA-128"),
    ("kmf-tdea-192", KMF, 3, "KMF TDEA-192"),
    ("kmf-edea", KMF, 9, "KMF Encrypted-DEA"),
    ("kmf-etdea-128", KMF, 10, "KMF Encrypted-TDEA-128"),
    ("kmf-etdea-192", KMF, 11, "KMF Encrypted-TDEA-192"),
    ("kmf-aes-128", KMF, 18, "KMF AES-128"),
    ("kmf-aes-192", KMF, 19, "KMF AES-192"),
    ("kmf-aes-256", KMF, 20, "KMF AES-256"),
    ("kmf-eaes-128", KMF, 26, "KMF Encrypted-AES-128"),
    ("kmf-eaes-192", KMF, 27, "KMF Encrypted-AES-192"),
    ("kmf-eaes-256", KMF, 28, "KMF Encrypted-AES-256"),
    ("kmo-dea", KMO, 1, "KMO DEA"),
    ("kmo-tdea-128", KMO, 2, "KMO TDEA-128"),
    ("kmo-tdea-192", KMO, 3, "KMO TDEA-192"),
    ("kmo-edea", KMO, 9, "KMO Encrypted-DEA"),
    ("kmo-etdea-128", KMO, 10, "KMO Encrypted-TDEA-128"),
    ("kmo-etdea-192", KMO, 11, "KMO Encrypted-TDEA-192"),
    ("kmo-aes-128", KMO, 18, "KMO AES-128"),
    ("kmo-aes-192", KMO, 19, "KMO AES-192"),
    ("kmo-aes-256", KMO, 20, "KMO AES-256"),
    ("kmo-eaes-128", KMO, 26, "KMO Encrypted-AES-128"),
    ("kmo-eaes-192", KMO, 27, "KMO Encrypted-AES-192"),
    ("kmo-eaes-256", KMO, 28, "KMO Encrypted-AES-256"),
    ("pcc-cmac-dea", PCC, 1, "PCC Compute-Last-Block-CMAC-Using-DEA"),
    ("pcc-cmac-tdea-128", PCC, 2, "PCC Compute-Last-Block-CMAC-Using-TDEA-128"),
    ("pcc-cmac-tdea-192", PCC, 3, "PCC Compute-Last-Block-CMAC-Using-TDEA-192"),
    ("pcc-cmac-edea", PCC, 9, "PCC Compute-Last-Block-CMAC-Using-Encrypted-DEA"),
    ("pcc-cmac-etdea-128", PCC, 10, "PCC Compute-Last-Block-CMAC-Using-Encrypted-TDEA-128"),
    ("pcc-cmac-etdea-192", PCC, 11, "PCC Compute-Last-Block-CMAC-Using-EncryptedTDEA-192"),
    ("pcc-cmac-aes-128", PCC, 18, "PCC Compute-Last-Block-CMAC-Using-AES-128"),
    ("pcc-cmac-aes-192", PCC, 19, "PCC Compute-Last-Block-CMAC-Using-AES-192"),
    ("pcc-cmac-aes-256", PCC, 20, "PCC Compute-Last-Block-CMAC-Using-AES-256"),
    ("pcc-cmac-eaes-128", PCC, 26, "PCC Compute-Last-Block-CMAC-Using-Encrypted-AES-128"),
    ("pcc-cmac-eaes-192", PCC, 27, "PCC Compute-Last-Block-CMAC-Using-Encrypted-AES-192"),
    ("pcc-cmac-eaes-256", PCC, 28, "PCC Compute-Last-Block-CMAC-Using-Encrypted-AES-256"),
    ("pcc-xts-aes-128", PCC, 50, "PCC Compute-XTS-Parameter-Using-AES-128"),
    ("pcc-xts-aes-256", PCC, 52, "PCC Compute-XTS-Parameter-Using-AES-256"),
    ("pcc-xts-eaes-128", PCC, 58, "PCC Compute-XTS-Parameter-Using-Encrypted-AES-128"),
    ("pcc-xts-eaes-256", PCC, 60, "PCC Compute-XTS-Parameter-Using-Encrypted-AES-256"),
    ("pcc-scalar-mult-p256", PCC, 64, "PCC Scalar-Multiply-P256"),
    ("pcc-scalar-mult-p384", PCC, 65, "PCC Scalar-Multiply-P384"),
    ("pcc-scalar-mult-p521", PCC, 66, "PCC Scalar-Multiply-P521"),
    ("pcc-scalar-mult-ed25519", PCC, 72, "PCC Scalar-Multiply-Ed25519"),
    ("pcc-scalar-mult-ed448", PCC, 73, "PCC Scalar-Multiply-Ed448"),
    ("pcc-scalar-mult-x25519", PCC, 80, "PCC Scalar-Multiply-X25519"),
    ("pcc-scalar-mult-x448", PCC, 81, "PCC Scalar-Multiply-X448"),
    ("ppno-sha-512-drng", PPNO, 3, "PPNO SHA-512-DRNG"),
    ("prno-trng-qrtcr", PPNO, 112, "PRNO TRNG-Query-Raw-to-Conditioned-Ratio"),
    ("prno-trng", PPNO, 114, "PRNO TRNG"),
    ("kma-gcm-aes-128", KMA, 18, "KMA GCM-AES-128"),
    ("kma-gcm-aes-192", KMA, 19, "KMA GCM-AES-192"),
    ("kma-gcm-aes-256", KMA, 20, "KMA GCM-AES-256"),
    ("kma-gcm-eaes-128", KMA, 26, "KMA GCM-Encrypted-AES-128"),
    ("kma-gcm-eaes-192", KMA, 27, "KMA GCM-Encrypted-AES-192"),
    ("kma-gcm-eaes-256", KMA, 28, "KMA GCM-Encrypted-AES-256"),
    ("kdsa-ecdsa-verify-p256", KDSA, 1, "KDSA ECDSA-Verify-P256"),
    ("kdsa-ecdsa-verify-p384", KDSA, 2, "KDSA ECDSA-Verify-P384"),
    ("kdsa-ecdsa-verify-p521", KDSA, 3, "KDSA ECDSA-Verify-P521"),
    ("kdsa-ecdsa-sign-p256", KDSA, 9, "KDSA ECDSA-Sign-P256"),
    ("kdsa-ecdsa-sign-p384", KDSA, 10, "KDSA ECDSA-Sign-P384"),
    ("kdsa-ecdsa-sign-p521", KDSA, 11, "KDSA ECDSA-Sign-P521"),
    ("kdsa-eecdsa-sign-p256", KDSA, 17, "KDSA Encrypted-ECDSA-Sign-P256"),
    ("kdsa-eecdsa-sign-p384", KDSA, 18, "KDSA Encrypted-ECDSA-Sign-P384"),
    ("kdsa-eecdsa-sign-p521", KDSA, 19, "KDSA Encrypted-ECDSA-Sign-P521"),
    ("kdsa-eddsa-verify-ed25519", KDSA, 32, "KDSA EdDSA-Verify-Ed25519"),
    ("kdsa-eddsa-verify-ed448", KDSA, 36, "KDSA EdDSA-Verify-Ed448"),
    ("kdsa-eddsa-sign-ed25519", KDSA, 40, "KDSA EdDSA-Sign-Ed25519"),
    ("kdsa-eddsa-sign-ed448", KDSA, 44, "KDSA EdDSA-Sign-Ed448"),
    ("kdsa-eeddsa-sign-ed25519", KDSA, 48, "KDSA Encrypted-EdDSA-Sign-Ed25519"),
    ("kdsa-eeddsa-sign-ed448", KDSA, 52, "KDSA Encrypted-EdDSA-Sign-Ed448"),
    ("sortl-sflr", SORTL, 1, "SORTL SFLR"),
    ("sortl-svlr", SORTL, 2, "SORTL SVLR"),
    ("sortl-32", SORTL, 130, "SORTL 32 input lists"),
    ("sortl-128", SORTL, 132, "SORTL 128 input lists"),
    ("sortl-f0", SORTL, 192, "SORTL format 0 parameter-block"),
    ("dfltcc-gdht", DFLTCC, 1, "DFLTCC GDHT"),
    ("dfltcc-cmpr", DFLTCC, 2, "DFLTCC CMPR"),
    ("dfltcc-xpnd", DFLTCC, 4, "DFLTCC XPND"),
    ("dfltcc-f0", DFLTCC, 192, "DFLTCC format 0 parameter-block"),
)


@dataclass(frozen=True)
class Feature:
    index: int  # position in QEMU's order: the feature's bit in a feature set
    name: str
    kind: str
    bit: int
    description: str

    @property
    def mask(self) -> int:
        return 1 << self.index


FEATURES: tuple[Feature, ...] = tuple(Feature(i, *row) for i, row in enumerate(_FEATURE_TABLE))
FEATURE_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
ALL_FEATURES = (1 << len(FEATURES)) - 1

#: (name, description, members), in QEMU 7.2's order of definition
_GROUP_TABLE: tuple[tuple[str, str, str], ...] = (
    ("plo", "Perform-locked-operation facility",
     "plo-cl plo-clg plo-clgr plo-clx plo-cs plo-csg plo-csgr plo-csx plo-dcs plo-dcsg plo-dcsgr "
     "plo-dcsx plo-csst plo-csstg plo-csstgr plo-csstx plo-csdst plo-csdstg plo-csdstgr plo-csdstx "
     "plo-cstst plo-cststg plo-cststgr plo-cststx"),
    ("tods", "Tod-clock-steering facility",
     "tods-base ptff-qto ptff-qsi ptff-qpc ptff-sto"),
    ("gen13ptff", "PTFF enhancements introduced with z13",
     "ptff-qui ptff-qtou ptff-stou"),
    ("msa", "Message-security-assist facility",
     "msa-base kmac-dea kmac-tdea-128 kmac-tdea-192 kmc-dea kmc-tdea-128 kmc-tdea-192 km-dea "
     "km-tdea-128 km-tdea-192 kimd-sha-1 klmd-sha-1"),
    ("msa1", "Message-security-assist-extension 1 facility",
     "kmc-aes-128 km-aes-128 kimd-sha-256 klmd-sha-256"),
    ("msa2", "Message-security-assist-extension 2 facility",
     "kmc-aes-192 kmc-aes-256 kmc-prng km-aes-192 km-aes-256 kimd-sha-512 klmd-sha-512"),
    ("msa3", "Message-security-assist-extension 3 facility",
     "msa3-base kmac-edea kmac-etdea-128 kmac-etdea-192 kmc-edea kmc-etdea-128 kmc-etdea-192 "
     "kmc-eaes-128 kmc-eaes-192 kmc-eaes-256 km-edea km-etdea-128 km-etdea-192 km-eaes-128 "
     "km-eaes-192 km-eaes-256 pckmo-edea pckmo-etdea-128 pckmo-etdea-192 pckmo-aes-128 "
     "pckmo-aes-192 pckmo-aes-256"),
    ("msa4", "Message-security-assist-extension 4 facility",
     "msa4-base kmac-aes-128 kmac-aes-192 kmac-aes-256 kmac-eaes-128 kmac-eaes-192 kmac-eaes-256 "
     "km-xts-aes-128 km-xts-aes-256 km-xts-eaes-128 km-xts-eaes-256 kimd-ghash kmctr-dea "
     "kmctr-tdea-128 kmctr-tdea-192 kmctr-edea kmctr-etdea-128 kmctr-etdea-192 kmctr-aes-128 "
     "kmctr-aes-192 kmctr-aes-256 kmctr-eaes-128 kmctr-eaes-192 kmctr-eaes-256 kmf-dea "
     "kmf-tdea-128 kmf-tdea-192 kmf-edea kmf-etdea-128 kmf-etdea-192 kmf-aes-128 kmf-aes-192 "
     "kmf-aes-256 kmf-eaes-128 kmf-eaes-192 kmf-eaes-256 kmo-dea kmo-tdea-128 kmo-tdea-192 "
     "kmo-edea kmo-etdea-128 kmo-etdea-192 kmo-aes-128 kmo-aes-192 kmo-aes-256 kmo-eaes-128 "
     "kmo-eaes-192 kmo-eaes-256 pcc-cmac-dea pcc-cmac-tdea-128 pcc-cmac-tdea-192 pcc-cmac-edea "
     "pcc-cmac-etdea-128 pcc-cmac-etdea-192 pcc-cmac-aes-128 pcc-cmac-aes-192 pcc-cmac-aes-256 "
     "pcc-cmac-eaes-128 pcc-cmac-eaes-192 pcc-cmac-eaes-256 pcc-xts-aes-128 pcc-xts-aes-256 "
     "pcc-xts-eaes-128 pcc-xts-eaes-256"),
    ("msa5", "Message-security-assist-extension 5 facility",
     "msa5-base ppno-sha-512-drng"),
    ("msa6", "Message-security-assist-extension 6 facility",
     "kimd-sha3-224 kimd-sha3-256 kimd-sha3-384 kimd-sha3-512 kimd-shake-128 kimd-shake-256 "
     "klmd-sha3-224 klmd-sha3-256 klmd-sha3-384 klmd-sha3-512 klmd-shake-128 klmd-shake-256"),
    ("msa7", "Message-security-assist-extension 7 facility",
     "prno-trng-qrtcr prno-trng"),
    ("msa8", "Message-security-assist-extension 8 facility",
     "msa8-base kma-gcm-aes-128 kma-gcm-aes-192 kma-gcm-aes-256 kma-gcm-eaes-128 kma-gcm-eaes-192 "
     "kma-gcm-eaes-256"),
    ("msa9", "Message-security-assist-extension 9 facility",
     "msa9-base pcc-scalar-mult-p256 pcc-scalar-mult-p384 pcc-scalar-mult-p521 "
     "pcc-scalar-mult-ed25519 pcc-scalar-mult-ed448 pcc-scalar-mult-x25519 pcc-scalar-mult-x448 "
     "kdsa-ecdsa-verify-p256 kdsa-ecdsa-verify-p384 kdsa-ecdsa-verify-p521 kdsa-ecdsa-sign-p256 "
     "kdsa-ecdsa-sign-p384 kdsa-ecdsa-sign-p521 kdsa-eecdsa-sign-p256 kdsa-eecdsa-sign-p384 "
     "kdsa-eecdsa-sign-p521 kdsa-eddsa-verify-ed25519 kdsa-eddsa-verify-ed448 "
     "kdsa-eddsa-sign-ed25519 kdsa-eddsa-sign-ed448 kdsa-eeddsa-sign-ed25519 "
     "kdsa-eeddsa-sign-ed448"),
    ("msa9_pckmo", "Message-security-assist-extension 9 PCKMO subfunctions",
     "pckmo-ecc-p256 pckmo-ecc-p384 pckmo-ecc-p521 pckmo-ecc-ed25519 pckmo-ecc-ed448"),
    ("mepochptff", "PTFF enhancements introduced with Multiple-epoch facility",
     "ptff-qsie ptff-qtoue ptff-stoe ptff-stoue"),
    ("esort", "Enhanced-sort facility",
     "esort-base sortl-sflr sortl-svlr sortl-32 sortl-128 sortl-f0"),
    ("deflate", "Deflate-conversion facility",
     "deflate-base dfltcc-gdht dfltcc-cmpr dfltcc-xpnd dfltcc-f0"),
)


def _feature_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= FEATURE_BY_NAME[name].mask
    return mask


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    description: str
    mask: int


GROUPS: tuple[FeatureGroup, ...] = tuple(
    FeatureGroup(name, desc, _feature_mask(members.split())) for name, desc, members in _GROUP_TABLE)
GROUP_BY_NAME: dict[str, FeatureGroup] = {g.name: g for g in GROUPS}


def mask_of(names: str) -> int:
    """The feature set that whitespace-separated feature and group names stand for."""
    mask = 0
    for name in names.split():
        group = GROUP_BY_NAME.get(name)
        mask |= group.mask if group is not None else FEATURE_BY_NAME[name].mask
    return mask


def feature_names(mask: int) -> list[str]:
    """QEMU's naming of a feature set: every whole group first, then the other features,
    each in order of definition."""
    names = []
    for group in GROUPS:
        if mask & group.mask == group.mask:
            names.append(group.name)
            mask &= ~group.mask
    names.extend(f.name for f in FEATURES if mask & f.mask)
    return names


# -- CPU definitions ----------------------------------------------------------------------------
#: name, CPU type (STIDP, STSI), generation, GA level, description; in order of release
_DEFINITION_TABLE: tuple[tuple[str, int, int, int, str], ...] = (
    ("z900", 0x2064, 7, 1, "IBM zSeries 900 GA1"),
    ("z900.2", 0x2064, 7, 2, "IBM zSeries 900 GA2"),
    ("z900.3", 0x2064, 7, 3, "IBM zSeries 900 GA3"),
    ("z800", 0x2066, 7, 3, "IBM zSeries 800 GA1"),
    ("z990", 0x2084, 8, 1, "IBM zSeries 990 GA1"),
    ("z990.2", 0x2084, 8, 2, "IBM zSeries 990 GA2"),
    ("z990.3", 0x2084, 8, 3, "IBM zSeries 990 GA3"),
    ("z890", 0x2086, 8, 3, "IBM zSeries 880 GA1"),
    ("z990.4", 0x2084, 8, 4, "IBM zSeries 990 GA4"),
    ("z890.2", 0x2086, 8, 4, "IBM zSeries 880 GA2"),
    ("z990.5", 0x2084, 8, 5, "IBM zSeries 990 GA5"),
    ("z890.3", 0x2086, 8, 5, "IBM zSeries 880 GA3"),
    ("z9EC", 0x2094, 9, 1, "IBM System z9 EC GA1"),
    ("z9EC.2", 0x2094, 9, 2, "IBM System z9 EC GA2"),
    ("z9BC", 0x2096, 9, 2, "IBM System z9 BC GA1"),
    ("z9EC.3", 0x2094, 9, 3, "IBM System z9 EC GA3"),
    ("z9BC.2", 0x2096, 9, 3, "IBM System z9 BC GA2"),
    ("z10EC", 0x2097, 10, 1, "IBM System z10 EC GA1"),
    ("z10EC.2", 0x2097, 10, 2, "IBM System z10 EC GA2"),
    ("z10BC", 0x2098, 10, 2, "IBM System z10 BC GA1"),
    ("z10EC.3", 0x2097, 10, 3, "IBM System z10 EC GA3"),
    ("z10BC.2", 0x2098, 10, 3, "IBM System z10 BC GA2"),
    ("z196", 0x2817, 11, 1, "IBM zEnterprise 196 GA1"),
    ("z196.2", 0x2817, 11, 2, "IBM zEnterprise 196 GA2"),
    ("z114", 0x2818, 11, 2, "IBM zEnterprise 114 GA1"),
    ("zEC12", 0x2827, 12, 1, "IBM zEnterprise EC12 GA1"),
    ("zEC12.2", 0x2827, 12, 2, "IBM zEnterprise EC12 GA2"),
    ("zBC12", 0x2828, 12, 2, "IBM zEnterprise BC12 GA1"),
    ("z13", 0x2964, 13, 1, "IBM z13 GA1"),
    ("z13.2", 0x2964, 13, 2, "IBM z13 GA2"),
    ("z13s", 0x2965, 13, 2, "IBM z13s GA1"),
    ("z14", 0x3906, 14, 1, "IBM z14 GA1"),
    ("z14.2", 0x3906, 14, 2, "IBM z14 GA2"),
    ("z14ZR1", 0x3907, 14, 1, "IBM z14 Model ZR1 GA1"),
    ("gen15a", 0x8561, 15, 1, "IBM z15 T01 GA1"),
    ("gen15b", 0x8562, 15, 1, "IBM z15 T02 GA1"),
    ("gen16a", 0x3931, 16, 1, "IBM 3931 GA1"),
    ("gen16b", 0x3932, 16, 1, "IBM 3932 GA1"),
)

#: (generation, GA level) -> what it adds to the base, default and full feature sets.  Each set
#: carries over from the level before; the default set also gets what the base set gets, the
#: full set everything the default set has; "-name" takes a feature away (with generation 15,
#: csske left the base set and bpb the default set).
_FEATURE_HISTORY: dict[tuple[int, int], tuple[str, str, str]] = {
    (7, 1): ("plo esan3 zarch", "", "ppa15 bpb sief2 skey gpereh ib cei"),
    (7, 2): ("", "", "etf2"),
    (7, 3): ("", "", "ldisp siif"),
    (8, 1): ("msa dateh etf2 ldisp ldisphp hfpm", "", "gsls 64bscao"),
    (8, 2): ("", "", ""),
    (8, 3): ("", "", "asnlxr etf3"),
    (8, 4): ("", "", ""),
    (8, 5): ("", "", ""),
    (9, 1): ("tods idtes asnlxr stfle srs eimm etf3 hfpue etf2eh stckf etf3eh dateh2",
             "msa1 sthyi cmm", "cmma"),
    (9, 2): ("", "", "mvcos ectg csst fpseh dfp"),
    (9, 3): ("", "", "csske pfpo"),
    (10, 1): ("csske parseh mvcos ectg csst csst2 ginste exrl fpseh dfp dfphp pfpo", "msa2 edat",
              "ctop esop pfmfi sigpif"),
    (10, 2): ("", "", "sprogp ibs"),
    (10, 3): ("", "", "msa3"),
    (11, 1): ("nonqks emon fpe sprogp stfle45 cmpsceh iacc2", "msa3 msa4 ipter aefsi ppa15 bpb", ""),
    (11, 2): ("", "", ""),
    (12, 1): ("dfpzc stfle49 ltlbc", "cte ri zpci aen te edat2 sea_esop2 esop",
              "apqci apft apqi ais els diag318 ap"),
    (12, 2): ("", "", "msa5"),
    (13, 1): ("gen13ptff stfle53 dfppc", "msa5 vx", ""),
    (13, 2): ("", "", ""),
    (14, 1): ("opc eec minste2 sema tsi", "msa6 msa7 msa8 mepochptff iep gs vxpd vxeh mepoch",
              "tpei irbm cmmnt etoken hpma2 kss"),
    (14, 2): ("", "", ""),
    (15, 1): ("minste3 -csske", "msa9 msa9_pckmo deflate vxeh2 vxpdeh etoken -bpb", "esort unpack"),
    (16, 1): ("", "nnpa vxpdeh2 beareh rdp pai paie", ""),
}


def _added_removed(names: str) -> tuple[int, int]:
    words = names.split()
    return (mask_of(" ".join(w for w in words if not w.startswith("-"))),
            mask_of(" ".join(w[1:] for w in words if w.startswith("-"))))


@dataclass(frozen=True)
class CpuDefinition:
    name: str
    cpu_type: int
    generation: int
    ga: int
    description: str
    base: int
    default: int
    full: int

    @property
    def mha_pow(self) -> int:
        """SCLP Read SCP Info: the maximum addressable storage, as a power of 2 (QEMU's values)."""
        return {7: 38, 8: 38, 9: 40, 10: 43, 11: 44, 12: 44}.get(self.generation, 47)

    @property
    def hmfai(self) -> int:
        """SCLP Read SCP Info: the hypervisor-managed facility indications (QEMU's values)."""
        return 0x08000000 if self.generation >= 11 else 0


def _build_definitions() -> tuple[CpuDefinition, ...]:
    sets: dict[tuple[int, int], tuple[int, int, int]] = {}
    base = default = full = 0
    for level in sorted(_FEATURE_HISTORY):
        base_names, default_names, full_names = _FEATURE_HISTORY[level]
        base_add, base_remove = _added_removed(base_names)
        default_add, default_remove = _added_removed(default_names)
        base = (base | base_add) & ~base_remove
        default = (default | base_add | default_add) & ~base_remove & ~default_remove
        full |= default | mask_of(full_names)
        sets[level] = (base, default, full)
    return tuple(CpuDefinition(name, cpu_type, gen, ga, desc, *sets[(gen, ga)])
                 for name, cpu_type, gen, ga, desc in _DEFINITION_TABLE)


DEFINITIONS: tuple[CpuDefinition, ...] = _build_definitions()
DEFINITION_BY_NAME: dict[str, CpuDefinition] = {d.name: d for d in DEFINITIONS}

#: features in a definition's base set that do not count when a definition is searched for a
#: feature set (MSA subfunctions some machines lack; csske, which generation 15 dropped)
IGNORED_BASE_FEATURES = mask_of(
    "kmac-dea kmac-tdea-128 kmac-tdea-192 kmc-dea kmc-tdea-128 kmc-tdea-192 km-dea km-tdea-128 "
    "km-tdea-192 kimd-sha-1 klmd-sha-1 csske")


def find_definition(cpu_type: int, generation: int, ga: int, features: int | None) -> CpuDefinition | None:
    """QEMU's search for a definition: the latest one not newer than (generation, GA) whose base
    set ``features`` covers (the search stops at the first one it does not cover); the exact CPU
    type and GA level if present, else the latest one of that CPU type, else the latest one."""
    if not generation:
        ga = 0
        if cpu_type:
            generation = next((d.generation for d in DEFINITIONS if d.cpu_type == cpu_type), 0)
    last_compatible = same_type = None
    for definition in DEFINITIONS:
        if generation and (definition.generation > generation
                           or (definition.generation == generation and ga and definition.ga > ga)):
            break
        if features is not None and definition.base & ~features & ~IGNORED_BASE_FEATURES:
            break
        if definition.cpu_type == cpu_type and definition.ga == ga:
            return definition
        if definition.cpu_type == cpu_type:
            same_type = definition
        last_compatible = definition
    return same_type or last_compatible


# -- what the accelerator offers ---------------------------------------------------------------
#: the definition of QEMU 7.2's "qemu" and TCG "max" models
QEMU_TCG_DEFINITION = DEFINITION_BY_NAME["gen15a"]
#: the features of QEMU 7.2's "qemu" model under TCG (machine s390-ccw-virtio-7.2); TCG's "max"
#: has the same (read from qemu-system-s390x 7.2 with query-cpu-model-expansion)
QEMU_TCG_FEATURES = mask_of(
    "plo esan3 zarch dateh idtes stfle srs etf2 msa-base ldisp ldisphp eimm etf3 etf2eh stckf mvcos "
    "etf3eh ectg csst csst2 ginste exrl fpe sprogp fpseh stfle45 stfle49 ltlbc iacc2 stfle53 "
    "msa5-base minste2 minste3 zpci aen ais aefsi msa3-base msa4-base vx iep sea_esop2 vxeh msa8-base "
    "vxeh2 esop kimd-sha-512 klmd-sha-512 prno-trng")
#: features of TCG's model whose instructions vmd's engine (QEMU 5.0 TCG in libunicorn) does not
#: execute (operation exception): miscellaneous-instruction-extensions 2 and 3 (facilities 58,
#: 61), vector enhancements 1 and 2 (135, 148)
ENGINE_LACKS = mask_of("minste2 minste3 vxeh vxeh2")
#: everything vmd's accelerator offers: the "max" model
MAX_FEATURES = QEMU_TCG_FEATURES & ~ENGINE_LACKS

#: "A requires B", in QEMU 7.2's order of checking; a model breaking one is used with a warning
DEPENDENCIES: tuple[tuple[str, str], ...] = tuple(tuple(pair.split(">")) for pair in (  # type: ignore[misc]
    "ipter>dateh idtes>dateh idter>dateh idter>idtes ltlbc>dateh ldisphp>ldisp dfphp>dfp "
    "te>stfle49 edat2>edat msa5-base>kimd-sha-512 msa5-base>klmd-sha-512 msa4-base>msa3-base "
    "cmma>cmm cmma>gsls pfmfi>edat msa8-base>msa3-base msa9-base>msa3-base msa9-base>msa4-base "
    "mepoch>tods-base vxpd>vx vxpdeh>vxpd vxpdeh2>vxpdeh vxeh>vx iep>sea_esop2 sea_esop2>esop "
    "cmmnt>cmm gs>sea_esop2 mepoch>stckf mepoch>tods-base sema>stfle49 "
    "kimd-sha3-224>msa-base kimd-sha3-256>msa-base kimd-sha3-384>msa-base kimd-sha3-512>msa-base "
    "kimd-shake-128>msa-base kimd-shake-256>msa-base klmd-sha3-224>msa-base klmd-sha3-256>msa-base "
    "klmd-sha3-384>msa-base klmd-sha3-512>msa-base klmd-shake-128>msa-base klmd-shake-256>msa-base "
    "prno-trng-qrtcr>msa5-base prno-trng>msa5-base kss>sief2 apqci>ap apft>ap ptff-qsie>mepoch "
    "ptff-qtoue>mepoch ptff-stoe>mepoch ptff-stoue>mepoch apqi>ap diag318>els nnpa>vx rdp>ltlbc"
).split())


# -- model classes (the -cpu names) ------------------------------------------------------------
@dataclass(frozen=True)
class ModelClass:
    """A CPU model name (QEMU's CPU class): its definition and the features it starts with."""

    name: str
    definition: CpuDefinition
    features: int
    static: bool
    migration_safe: bool
    description: str

    @property
    def typename(self) -> str:
        return f"{self.name}-s390x-cpu"


def _model_classes() -> dict[str, ModelClass]:
    # QEMU's -cpu help order: qemu, max, then every definition's base and plain model.  "qemu" is
    # the emulator's own model, so what the engine lacks is masked (with QEMU it never exceeds max)
    classes = [
        ModelClass("qemu", QEMU_TCG_DEFINITION, QEMU_TCG_FEATURES & ~ENGINE_LACKS, False, True,
                   "QEMU Virtual CPU version 2.5+"),
        ModelClass("max", QEMU_TCG_DEFINITION, MAX_FEATURES, False, False,
                   "Enables all features supported by the accelerator in the current host"),
    ]
    for d in DEFINITIONS:
        classes.append(ModelClass(f"{d.name}-base", d, d.base, True, True, d.description))
        classes.append(ModelClass(d.name, d, d.default, False, True, d.description))
    return {c.name: c for c in classes}


MODEL_CLASSES: dict[str, ModelClass] = _model_classes()

#: the CPU's QOM properties that are not features: writable ones vmd accepts and ignores, and the
#: read-only ones (QEMU: "Property '<type>.<name>' is not writable")
_IGNORED_BOOL_PROPERTIES = frozenset({"start-powered-off"})
_READ_ONLY_PROPERTIES = frozenset({"type", "parent_bus", "hotplugged", "hotpluggable", "legacy-memory",
                                   "crash-information", "static", "migration-safe", "description"})


class CpuModelError(GenericError):
    """A CPU model that cannot be used (QEMU's text); ``warnings`` came out before it."""

    def __init__(self, desc: str, warnings: Iterable[str] = ()):
        super().__init__(desc)
        self.warnings = tuple(warnings)


class CpuModel:
    """One CPU model being set up: a class's definition and a feature set that properties change."""

    def __init__(self, model_class: ModelClass):
        self.model_class = model_class
        self.definition = model_class.definition
        self.features = model_class.features
        self.core_id = 0

    @classmethod
    def named(cls, name: str) -> "CpuModel | None":
        model_class = MODEL_CLASSES.get(name)
        return None if model_class is None else cls(model_class)

    def set_property(self, name: str, value: object) -> None:
        """Set a CPU property the way QEMU's QOM setters do.

        :raises VmdError: with QEMU's text (GenericError; DeviceNotFound for a link).
        """
        typename = self.model_class.typename
        feature = FEATURE_BY_NAME.get(name)
        group = GROUP_BY_NAME.get(name)
        if feature is not None or group is not None:
            if not isinstance(value, bool):
                raise GenericError(f"Invalid parameter type for '{name}', expected: boolean")
            mask = feature.mask if feature is not None else group.mask
            if not value:
                self.features &= ~mask
                return
            if not mask & self.definition.full:
                kind = "Feature" if feature is not None else "Group"
                raise GenericError(f"{kind} '{name}' is not available for CPU model '{self.definition.name}', "
                                   "it was introduced with later models.")
            self.features |= mask
            return
        if name in _READ_ONLY_PROPERTIES:
            raise GenericError(f"Property '{typename}.{name}' is not writable")
        if name in _IGNORED_BOOL_PROPERTIES or name == "realized":
            if not isinstance(value, bool):
                raise GenericError(f"Invalid parameter type for '{name}', expected: boolean")
            if name == "realized" and value:
                self._realize_again()
            return
        if name == "core-id":
            if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 63) <= value < 1 << 64:
                raise GenericError("Parameter 'core-id' expects uint64")
            if not 0 <= value < 1 << 32:
                raise GenericError("Parameter 'core-id' expects uint32_t")
            self.core_id = value
            return
        if name == "memory":
            if not isinstance(value, str):
                raise GenericError("Invalid parameter type for 'memory', expected: string")
            raise DeviceNotFound(f"Device '{value}' not found")
        raise GenericError(f"Property '{typename}.{name}' not found")

    def _realize_again(self) -> None:
        # QEMU realizes a second CPU object here: the model's checks, then its core id is taken
        error = compatibility_error(self)
        if error is not None:
            raise GenericError(error)
        raise GenericError(f"Unable to add CPU with core-id: {self.core_id}, it already exists")

    def copy(self) -> "CpuModel":
        other = CpuModel(self.model_class)
        other.definition, other.features, other.core_id = self.definition, self.features, self.core_id
        return other


def dependency_warnings(features: int) -> list[str]:
    """QEMU's warnings for a feature set that lacks what its features need."""
    return [f"'{a}' requires '{b}'." for a, b in DEPENDENCIES
            if features & FEATURE_BY_NAME[a].mask and not features & FEATURE_BY_NAME[b].mask]


def compatibility_error(model: CpuModel) -> str | None:
    """Why the accelerator cannot run this model (QEMU's text), or None."""
    limit = QEMU_TCG_DEFINITION
    if model.definition.generation > limit.generation:
        return ("Selected CPU generation is too new. Maximum supported model in the configuration: "
                f"'{limit.name}'")
    if model.definition.generation == limit.generation and model.definition.ga > limit.ga:
        return f"Selected CPU GA level is too new. Maximum supported model in the configuration: '{limit.name}'"
    missing = model.features & ~MAX_FEATURES
    if not missing:
        return None
    # QEMU prepends each name to " ": the names come out last first, the text ends in two spaces
    names = "".join(f"{name} " for name in reversed(feature_names(missing)))
    return f"Some features requested in the CPU model are not available in the configuration: {names} "


def unavailable_features(model_class: ModelClass) -> list[str]:
    """query-cpu-definitions' unavailable-features: what keeps the accelerator from running the
    model, in QEMU's order ("type" when the generation or GA level is too new)."""
    limit = QEMU_TCG_DEFINITION
    definition = model_class.definition
    too_new = (definition.generation, definition.ga) > (limit.generation, limit.ga)
    names = list(reversed(feature_names(model_class.features & ~MAX_FEATURES)))
    return names + ["type"] if too_new else names


# -- QMP: expansion, comparison, baseline --------------------------------------------------------
def expansion(model: CpuModel, full: bool) -> tuple[str, list[tuple[str, bool]]]:
    """A model as a static base model and properties, in the order QEMU inserts them.

    Static: the base model of the definition and the differences from its base set (removed
    features first).  Full: every feature and group, enabled ones first.
    """
    base = model.definition.base
    if full:
        props = [(n, True) for n in feature_names(model.features)]
        props += [(n, False) for n in feature_names(ALL_FEATURES & ~model.features)]
    else:
        props = [(n, False) for n in feature_names(base & ~model.features)]
        props += [(n, True) for n in feature_names(model.features & ~base)]
    return f"{model.definition.name}-base", props


def comparison(a: CpuModel, b: CpuModel) -> tuple[str, list[str]]:
    """query-cpu-model-comparison: (result, responsible properties in QEMU's order)."""
    da, db = a.definition, b.definition
    if (da.generation, da.ga) == (db.generation, db.ga):
        generation = "identical"
    elif (da.generation, da.ga) < (db.generation, db.ga):
        generation = "subset"
    else:
        generation = "superset"
    responsible = [] if generation == "identical" else ["type"]
    if a.features == b.features:
        features = "identical"
    else:
        missing, added = a.features & ~b.features, b.features & ~a.features
        # QEMU prepends every name: the newest first
        responsible = list(reversed(feature_names(added))) + list(reversed(feature_names(missing))) + responsible
        features = "subset" if not missing else "superset" if not added else "incompatible"
    if generation == features or features == "identical":
        result = generation
    elif generation == "identical":
        result = features
    else:
        result = "incompatible"
    return result, responsible


def baseline(a: CpuModel, b: CpuModel) -> CpuModel:
    """query-cpu-model-baseline: the newest model both can run.

    :raises GenericError: when no definition fits the common features.
    """
    features = a.features & b.features
    da, db = a.definition, b.definition
    if da.generation == db.generation:
        cpu_type = da.cpu_type if da.cpu_type == db.cpu_type else 0
        generation, ga = da.generation, min(da.ga, db.ga)
    else:
        older = db if da.generation > db.generation else da
        cpu_type, generation, ga = older.cpu_type, older.generation, older.ga
    definition = find_definition(cpu_type, generation, ga, features)
    if definition is None:
        raise GenericError("No compatible CPU model could be created as important base features are disabled")
    model = CpuModel(MODEL_CLASSES[definition.name])
    model.features = features & definition.full
    return model


# -- the model a machine runs ----------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    """The CPU model of a machine, checked: what STIDP, STFLE and STSI report."""

    name: str
    definition: CpuDefinition
    features: int
    #: QEMU's warnings for the model (printed once per CPU)
    warnings: tuple[str, ...] = ()

    @property
    def cpu_type(self) -> int:
        return self.definition.cpu_type

    def has(self, feature: str) -> bool:
        return bool(self.features & FEATURE_BY_NAME[feature].mask)

    def cpu_id(self, address: int) -> int:
        """STIDP: version 0, the machine type, format 0; as QEMU under TCG, the low four bits of
        the CPU address go into the first four bits of the CPU identification (bits 8-11)."""
        return (self.cpu_type << 16) | ((address & 0xF) << 52)

    def feature_block(self, kind: str, size: int) -> bytes:
        """The bits of the features of one kind, bit n of the block for the feature with bit n."""
        block = bytearray(size)
        for f in FEATURES:
            if f.kind == kind and self.features & f.mask and f.bit < size * 8:
                block[f.bit // 8] |= 0x80 >> (f.bit % 8)
        return bytes(block)

    @property
    def facilities(self) -> bytes:
        """The facility list STFLE stores: the STFL features, and with z/Architecture the two
        facilities that are always active (2: z/Architecture active, 138: configuration-z/
        architectural mode); whole doublewords up to the last one with a bit set."""
        block = bytearray(self.feature_block(STFL, 256))
        if self.has("zarch"):
            for bit in (2, 138):
                block[bit // 8] |= 0x80 >> (bit % 8)
        used = max((i + 1 for i, byte in enumerate(block) if byte), default=0)
        return bytes(block[:(used + 7) // 8 * 8])


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def resolve_cpu_model(name: str = "qemu", features: Mapping[str, bool] | None = None) -> ResolvedModel:
    """``-cpu NAME,feature=on|off,...`` as QEMU 7.2 under TCG sets it up: the properties in
    order, then the dependency warnings, then the check against what the accelerator offers.

    :raises CpuModelError: with QEMU's text (and the warnings printed before it).
    """
    model = CpuModel.named(name)
    if model is None:
        # "host" exists with KVM only
        raise CpuModelError(f"unable to find CPU model '{name}'")
    for feature, value in (features or {}).items():
        try:
            model.set_property(feature, value)
        except VmdError as err:
            raise CpuModelError(f"can't apply global {model.model_class.typename}.{feature}={_on_off(value)}: "
                                f"{err.desc}") from None
    warnings = dependency_warnings(model.features)
    error = compatibility_error(model)
    if error is not None:
        raise CpuModelError(error, warnings)
    return ResolvedModel(name, model.definition, model.features, tuple(warnings))


#: the machine's model without -cpu
DEFAULT_MODEL = resolve_cpu_model("qemu")
