/* Wine 8.0 has no bcryptprimitives.dll, whose ProcessPrng every Rust >= 1.78 Windows
 * program imports for its random numbers. This stand-in, copied into a test prefix's
 * system32, gives ProcessPrng from advapi32's RtlGenRandom (SystemFunction036). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
