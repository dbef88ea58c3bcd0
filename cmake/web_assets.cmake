# The dashboard (collector/web) is bundled at build time and embedded in the
# collector, so it is served from memory with no network at run time:
#   1. `npm ci` installs the pinned packages of collector/web/package-lock.json
#      into the build directory (never into the source tree);
#   2. collector/web/build.mjs bundles app.js and style.css with esbuild into
#      content-hashed files and rewrites index.html to name them;
#   3. this file's script mode writes web_assets.c, the files as byte arrays
#      with their URL path, Content-Type and ETag (collector/api/web.h).
#
# Included by collector/CMakeLists.txt: st_web_assets(TARGET) adds the
# generated source to TARGET. Run with -P, it is the build step of 1 or 3:
#   cmake -DMODE=npm -DNPM=npm -DSRC=collector/web -DDIR=build/web -P web_assets.cmake
#   cmake -DMODE=embed -DDIST=build/web/dist -DOUT=build/web/web_assets.c -P web_assets.cmake

if(CMAKE_SCRIPT_MODE_FILE)
    cmake_minimum_required(VERSION 3.18)
    # ---- 1. npm ci in the build directory ----
    if(MODE STREQUAL "npm")
        file(COPY ${SRC}/package.json ${SRC}/package-lock.json DESTINATION ${DIR})
        execute_process(
            COMMAND ${NPM} ci --no-audit --no-fund --ignore-scripts --prefer-offline
                --fetch-retries=2 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000
                --fetch-timeout=60000
            WORKING_DIRECTORY ${DIR}
            RESULT_VARIABLE rc
            OUTPUT_VARIABLE out
            ERROR_VARIABLE out)
        if(NOT rc EQUAL 0)
            message(FATAL_ERROR
                "\nThe dashboard could not be built: `npm ci` failed in ${DIR} "
                "(exit ${rc}).\nThe collector embeds its dashboard, bundled at build "
                "time from the npm packages pinned in collector/web/package-lock.json "
                "(uPlot, esbuild). The build needs Node.js with npm and the npm registry "
                "(or an npm cache that already holds those packages).\n"
                "npm said:\n${out}")
        endif()
        file(TOUCH ${DIR}/npm-ci.stamp)
        return()
    endif()

    # ---- 3. dist/ -> web_assets.c ----
    if(NOT MODE STREQUAL "embed")
        message(FATAL_ERROR "web_assets.cmake: MODE must be npm or embed, not '${MODE}'")
    endif()
    get_filename_component(DIST ${DIST} ABSOLUTE)
    file(GLOB_RECURSE files RELATIVE ${DIST} ${DIST}/*)
    list(SORT files)
    if(NOT "index.html" IN_LIST files)
        message(FATAL_ERROR "web_assets.cmake: ${DIST}/index.html is missing")
    endif()
    string(REPEAT "0x..," 16 row) # CMake's regular expressions have no {16}
    set(arrays "")
    set(rows "")
    set(i 0)
    foreach(f ${files})
        get_filename_component(ext ${f} LAST_EXT)
        if(ext STREQUAL ".html")
            set(type "text/html; charset=utf-8")
        elseif(ext STREQUAL ".js")
            set(type "text/javascript; charset=utf-8")
        elseif(ext STREQUAL ".css")
            set(type "text/css; charset=utf-8")
        elseif(ext STREQUAL ".svg")
            set(type "image/svg+xml")
        elseif(ext STREQUAL ".png")
            set(type "image/png")
        elseif(ext STREQUAL ".woff2")
            set(type "font/woff2")
        elseif(ext STREQUAL ".json" OR ext STREQUAL ".map")
            set(type "application/json")
        else()
            message(FATAL_ERROR "web_assets.cmake: no Content-Type known for ${f}")
        endif()
        if(f STREQUAL "index.html")
            set(path "/")
            set(immutable false)
        elseif(f MATCHES "^assets/[A-Za-z0-9._-]+-[A-Z0-9]+\\.[a-z0-9]+$")
            # build.mjs names bundles by content hash: never changes under a name.
            set(path "/${f}")
            set(immutable true)
        else()
            set(path "/${f}")
            set(immutable false)
        endif()
        file(READ ${DIST}/${f} hex HEX)
        file(SHA256 ${DIST}/${f} sha)
        string(LENGTH "${hex}" n)
        math(EXPR n "${n} / 2")
        string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
        string(REGEX REPLACE "(${row})" "\\1\n    " hex "${hex}")
        string(SUBSTRING ${sha} 0 20 etag)
        string(APPEND arrays "/* ${f} */\nstatic const unsigned char asset_${i}[] = {\n    ${hex}0x00};\n\n")
        string(APPEND rows "    {\"${path}\", \"${type}\", \"\\\"${etag}\\\"\", ${immutable}, asset_${i}, ${n}},\n")
        math(EXPR i "${i} + 1")
    endforeach()
    file(WRITE ${OUT}.tmp
        "/* Generated at build time by cmake/web_assets.cmake from the bundled\n"
        " * dashboard (collector/web): do not edit, do not commit. */\n"
        "#include \"web.h\"\n\n"
        "${arrays}"
        "const st_web_asset st_web_assets[] = {\n${rows}};\n\n"
        "const size_t st_web_nassets = ${i};\n")
    file(RENAME ${OUT}.tmp ${OUT})
    return()
endif()

# st_web_assets(TARGET): bundles collector/web and adds web_assets.c to TARGET.
function(st_web_assets target)
    set(src ${PROJECT_SOURCE_DIR}/collector/web)
    set(dir ${CMAKE_CURRENT_BINARY_DIR}/web)
    set(script ${PROJECT_SOURCE_DIR}/cmake/web_assets.cmake)
    find_program(ST_NODE node)
    find_program(ST_NPM npm)
    if(NOT ST_NODE OR NOT ST_NPM)
        message(FATAL_ERROR "The collector's dashboard is bundled at build time with Node.js "
            "and npm (collector/web/package.json), but node or npm is not on the PATH: "
            "install them (Debian: apt-get install nodejs npm) and configure again.")
    endif()
    file(GLOB web_src CONFIGURE_DEPENDS ${src}/*.html ${src}/*.js ${src}/*.mjs ${src}/*.css)
    file(MAKE_DIRECTORY ${dir})
    add_custom_command(
        OUTPUT ${dir}/npm-ci.stamp
        COMMAND ${CMAKE_COMMAND} -DMODE=npm -DNPM=${ST_NPM} -DSRC=${src} -DDIR=${dir}
            -P ${script}
        DEPENDS ${src}/package.json ${src}/package-lock.json ${script}
        COMMENT "Installing the dashboard's npm packages (npm ci)"
        VERBATIM)
    add_custom_command(
        OUTPUT ${dir}/web_assets.c
        COMMAND ${ST_NODE} ${src}/build.mjs --npm-dir ${dir} --out ${dir}/dist
        COMMAND ${CMAKE_COMMAND} -DMODE=embed -DDIST=${dir}/dist -DOUT=${dir}/web_assets.c
            -P ${script}
        DEPENDS ${dir}/npm-ci.stamp ${web_src} ${script}
        COMMENT "Bundling and embedding the dashboard"
        VERBATIM)
    target_sources(${target} PRIVATE ${dir}/web_assets.c)
endfunction()
