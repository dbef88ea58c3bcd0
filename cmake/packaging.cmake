# Installation beyond the binaries, and the two Debian packages `make
# package` builds with CPack: strata-agent (agent, its unit, agent.yaml) and
# strata-collector (collector, the strata CLI, its unit, collector.yaml).
#
# The binaries are installed by agent/ and collector/ into the components
# `agent` and `collector`; this file adds the example configurations, the
# systemd units and the documentation to the same components, and one DEB
# per component (CPACK_DEB_COMPONENT_INSTALL).
#
#   cmake --install build                      # /usr/local/bin, /etc/strata, ...
#   cmake --install build --prefix /usr        # what the packages hold
#   cmake --build build --target package       # build/strata-*_<version>-1_<arch>.deb

set(STRATA_CONFDIR "/etc/strata" CACHE PATH
    "where the example configurations are installed (absolute; DESTDIR applies)")
set(STRATA_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "systemd unit directory, relative to the install prefix unless absolute")
option(STRATA_DEB_SHLIBDEPS
    "derive the packages' Depends with dpkg-shlibdeps (OFF: a fixed Debian 12 list)" ON)

set(ST_DEPLOY ${PROJECT_SOURCE_DIR}/deploy)

# ---- install rules ----------------------------------------------------------------------

# A unit from deploy/systemd, with ExecStart's /usr/bin (and Documentation's
# /usr/share/doc) rewritten at install time to the prefix actually installed
# to (`cmake --install --prefix`, CPack's /usr), so `make install` to
# /usr/local gives a unit that starts /usr/local/bin/strata-*.
function(strata_install_unit unit component)
    set(src ${ST_DEPLOY}/systemd/${unit})
    set(tmp ${PROJECT_BINARY_DIR}/systemd-${component}/${unit})
    if(IS_ABSOLUTE "${STRATA_SYSTEMD_UNITDIR}")
        set(dest "${STRATA_SYSTEMD_UNITDIR}")
    else()
        set(dest "\${CMAKE_INSTALL_PREFIX}/${STRATA_SYSTEMD_UNITDIR}")
    endif()
    install(CODE "
        file(READ \"${src}\" _st_unit)
        string(REPLACE \"=/usr/bin/strata\" \"=\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/strata\"
            _st_unit \"\${_st_unit}\")
        string(REPLACE \"=file:/usr/share/doc/\"
            \"=file:\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATAROOTDIR}/doc/\" _st_unit \"\${_st_unit}\")
        file(WRITE \"${tmp}\" \"\${_st_unit}\")
        file(INSTALL DESTINATION \"${dest}\" TYPE FILE
            PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ FILES \"${tmp}\")
    " COMPONENT ${component})
endfunction()

# A config from deploy/etc. `make install` over an existing, locally
# changed config keeps it and puts the new example beside it as NAME.new
# (packages leave this to dpkg's conffile handling).
function(strata_install_config name component)
    set(src ${ST_DEPLOY}/etc/${name})
    install(CODE "
        set(_st_dst \"\$ENV{DESTDIR}${STRATA_CONFDIR}/${name}\")
        set(_st_as ${name})
        if(EXISTS \"\${_st_dst}\")
            file(READ \"\${_st_dst}\" _st_old)
            file(READ \"${src}\" _st_new)
            if(NOT _st_old STREQUAL _st_new)
                message(STATUS \"Keeping: \${_st_dst} (changed locally; the new one is ${name}.new)\")
                set(_st_as ${name}.new)
            endif()
        endif()
        file(INSTALL DESTINATION \"${STRATA_CONFDIR}\" TYPE FILE RENAME \${_st_as}
            PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ FILES \"${src}\")
    " COMPONENT ${component})
endfunction()

strata_install_config(agent.yaml agent)
strata_install_config(collector.yaml collector)
strata_install_unit(strata-agent.service agent)
strata_install_unit(strata-collector.service collector)
install(FILES ${PROJECT_SOURCE_DIR}/README.md
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/strata-agent COMPONENT agent)
install(FILES ${PROJECT_SOURCE_DIR}/README.md
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/strata-collector COMPONENT collector)

# ---- maintainer scripts -----------------------------------------------------------------

# deploy/debian/*.in filled in for one package, plus its conffiles list.
function(strata_deb_scripts component package unit state purge_state)
    set(out ${PROJECT_BINARY_DIR}/debian/${package})
    set(ST_PACKAGE ${package})
    set(ST_UNIT ${unit})
    set(ST_STATE_DIR ${state})
    set(ST_PURGE_STATE ${purge_state})
    if(purge_state STREQUAL "yes")
        set(ST_PURGE_NOTE " and removes ${state}")
    else()
        set(ST_PURGE_NOTE "; ${state} (the data) is kept")
    endif()
    foreach(script postinst prerm postrm)
        configure_file(${ST_DEPLOY}/debian/${script}.in ${out}/${script} @ONLY
            FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
            WORLD_READ WORLD_EXECUTE)
    endforeach()
    file(WRITE ${out}/conffiles "${STRATA_CONFDIR}/${component}.yaml\n")
    string(TOUPPER ${component} C)
    set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_EXTRA
        "${out}/postinst;${out}/prerm;${out}/postrm;${out}/conffiles" PARENT_SCOPE)
endfunction()

strata_deb_scripts(agent strata-agent strata-agent.service /var/lib/strata-agent yes)
strata_deb_scripts(collector strata-collector strata-collector.service /var/lib/strata no)

# ---- CPack ------------------------------------------------------------------------------

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME strata)
set(CPACK_PACKAGE_VENDOR "Strata")
set(CPACK_PACKAGE_CONTACT "Strata maintainers <maintainers@users.noreply.r-seed-33e384f1.example>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL agent collector)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_AGENT_PACKAGE_NAME strata-agent)
set(CPACK_DEBIAN_COLLECTOR_PACKAGE_NAME strata-collector)
set(CPACK_COMPONENT_AGENT_DESCRIPTION "Strata performance agent
strata-agent runs on every edge, CDN, app and database host. It samples
the host (CPU, memory, TCP) and the servers on it (nginx, varnish, redis,
memcached, PostgreSQL, StatsD, browser beacons), spools zstd-compressed
frames durably and ships them to a Strata collector.")
set(CPACK_COMPONENT_COLLECTOR_DESCRIPTION "Strata performance collector and CLI
strata-collector stores the frames of Strata agents in LMDB, ranks
performance problems across the database, function, frontend, realtime
and infrastructure layers, proposes and dispatches optimizations, and
serves an HTTP API, Prometheus metrics and a dashboard. Includes the
strata command line for SREs.")

# The postinsts call adduser; the libraries come from dpkg-shlibdeps, or
# from this list (Debian 12 names) when it is switched off.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
if(STRATA_DEB_SHLIBDEPS)
    set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
    string(JOIN ", " CPACK_DEBIAN_PACKAGE_DEPENDS adduser "libc6 (>= 2.34)" "libnng1 (>= 1.5)"
        libprotobuf-c1 liblmdb0 libzstd1 libcurl4 libssl3 libyaml-0-2 libjansson4 libpq5
        libhiredis0.14 zlib1g)
endif()

# The agent opens libcurl (nginx sampler) and libpq (postgres sampler and
# action) with dlopen on first use, so dpkg-shlibdeps cannot see them:
# recommended, as apt installs by default, not required by hosts that
# sample neither.
set(CPACK_DEBIAN_AGENT_PACKAGE_RECOMMENDS "libcurl4, libpq5")

include(CPack)
