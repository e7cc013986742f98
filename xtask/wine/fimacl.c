/* Test helper for the Wine tests: sets the owner and DACL of a registry key or a file
 * from SDDL, as an administrator (or malware) would with regedit or icacls, which Wine
 * does not provide.
 *   fimacl key HKLM\PATH SDDL      RegSetKeySecurity on the 64-bit view of the key
 *   fimacl file C:\PATH SDDL       SetFileSecurityW
 * Exits 0 on success, 1 with the Windows error on stderr otherwise. */
#include <windows.h>
#include <sddl.h>
#include <stdio.h>
#include <wchar.h>

int wmain(int argc, wchar_t **argv)
{
    PSECURITY_DESCRIPTOR sd = NULL;
    SECURITY_INFORMATION what = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
    if (argc != 4) {
        fwprintf(stderr, L"usage: fimacl key|file PATH SDDL\n");
        return 2;
    }
    if (!ConvertStringSecurityDescriptorToSecurityDescriptorW(argv[3], SDDL_REVISION_1, &sd, NULL)) {
        fwprintf(stderr, L"bad SDDL: error %lu\n", GetLastError());
        return 1;
    }
    if (wcscmp(argv[1], L"key") == 0) {
        HKEY key;
        const wchar_t *path = argv[2];
        LONG rc;
        if (_wcsnicmp(path, L"HKLM\\", 5) != 0) {
            fwprintf(stderr, L"only HKLM keys\n");
            return 2;
        }
        rc = RegOpenKeyExW(HKEY_LOCAL_MACHINE, path + 5, 0, WRITE_DAC | WRITE_OWNER | KEY_WOW64_64KEY, &key);
        if (rc == ERROR_SUCCESS)
            rc = RegSetKeySecurity(key, what, sd);
        if (rc != ERROR_SUCCESS) {
            fwprintf(stderr, L"RegSetKeySecurity: error %ld\n", rc);
            return 1;
        }
        RegCloseKey(key);
    } else if (wcscmp(argv[1], L"file") == 0) {
        if (!SetFileSecurityW(argv[2], what, sd)) {
            fwprintf(stderr, L"SetFileSecurityW: error %lu\n", GetLastError());
            return 1;
        }
    } else {
        fwprintf(stderr, L"usage: fimacl key|file PATH SDDL\n");
        return 2;
    }
    LocalFree(sd);
    return 0;
}
